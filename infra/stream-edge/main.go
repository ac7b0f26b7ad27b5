// Command stream-edge serves StreamPredictions and GetLatestPrediction in front of the Python gRPC
// server (grpc_server), which stays the one authority on what a request may ask and who may ask it.
//
// Python gRPC spends about 50 µs of CPU per message sent; a new prediction to 1,000 streams is 50 ms
// of one core, and its unary calls stall now and then for milliseconds. The edge follows the server's
// predictions on one upstream stream and sends each to its own subscribers as the server encoded it, at
// a few µs a message.
//
//   - A new subscription is first opened on the server with the client's request and metadata, and
//     served once the server has accepted it (its initial metadata): validation and authentication
//     answer exactly as the server's. So is its target: "price", the only one served, is what the
//     edge's own stream from the server carries.
//   - Keys and subscriptions are by exchange too: "BTC/USD" on Kraken and on Coinbase are two keys, and a
//     request or prediction that names no exchange (from clients and servers older than exchanges)
//     means Kraken, as on the server.
//   - GetLatestPrediction is answered from the edge's latest predictions when, since the edge last
//     connected, the server has answered a lookup of that key and target (OK or NOT_FOUND) and accepted
//     the caller's authorization; anything else goes to the server, including any lookup with a field
//     the edge does not read (quantile_levels selects quantiles: the server builds that answer).
//   - When the server goes away, the edge's streams end with UNAVAILABLE (clients reconnect, as they
//     would to the server) and it forgets its predictions and what the server vouched for.
//   - Every other method is relayed to the server as it is.
//   - The edge holds its subscribers' streams, so it bounds them per caller itself (callers.go), with
//     the server's grpc.max_streams_per_caller; the server sees only a short admission stream each.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

const (
	service      = "cryptopredict.v1.PredictionService"
	streamMethod = "/" + service + "/StreamPredictions"
	latestMethod = "/" + service + "/GetLatestPrediction"
	// The upstream token is a secret: from the environment, never the command line.
	tokenEnv = "STREAM_EDGE_UPSTREAM_TOKEN"
)

// rawCodec passes messages through as bytes: the edge relays what the server encoded. The edge's own
// health service still speaks protobuf messages.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.(*[]byte); ok {
		return *b, nil
	}
	return proto.Marshal(v.(proto.Message))
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	if b, ok := v.(*[]byte); ok {
		*b = append([]byte(nil), data...)
		return nil
	}
	return proto.Unmarshal(data, v.(proto.Message))
}

func (rawCodec) Name() string { return "proto" }

type edge struct {
	hub      *hub
	upstream *grpc.ClientConn
	token    string
	health   *health.Server
	vouched  *vouched
	callers  *callers

	latestFromEdge     atomic.Int64 // GetLatestPrediction answered here
	latestFromUpstream atomic.Int64 // ... and relayed to the server
}

func authorization(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	return strings.Join(md.Get("authorization"), "\n")
}

// passedAuthentication: the server answered with a code that only its handlers give, past its
// authentication.
func passedAuthentication(err error) bool {
	switch status.Code(err) {
	case codes.OK, codes.NotFound, codes.InvalidArgument:
		return true
	}
	return false
}

// outgoing is the client's metadata to send upstream: its own headers (authorization among them),
// without the transport's, which the upstream call sets itself.
func outgoing(ctx context.Context) metadata.MD {
	md, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range md {
		if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") || k == "content-type" || k == "user-agent" || k == "te" {
			continue
		}
		out[k] = v
	}
	return out
}

// follow streams every prediction from the upstream into the hub until the stream ends.
func (e *edge) follow(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if e.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+e.token)
	}
	up, err := e.openStream(ctx, everyPrediction())
	if err != nil {
		return err
	}
	e.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	e.health.SetServingStatus(service, healthpb.HealthCheckResponse_SERVING)
	log.Printf("following %s", e.upstream.Target())
	for {
		var wire []byte
		if err := up.RecvMsg(&wire); err != nil {
			return err
		}
		p, err := parseResponse(wire)
		if err != nil {
			log.Printf("skipping an upstream message the edge cannot read: %v", err)
			continue
		}
		e.hub.publish(p)
	}
}

// feed follows the upstream for as long as ctx lives, reconnecting with backoff.
func (e *edge) feed(ctx context.Context) {
	delay := time.Second
	for ctx.Err() == nil {
		started := time.Now()
		err := e.follow(ctx)
		e.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		e.health.SetServingStatus(service, healthpb.HealthCheckResponse_NOT_SERVING)
		// Until it is back, lookups and new streams go to the server and fail as they would there.
		e.vouched.reset()
		e.hub.reset()
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > time.Minute {
			delay = time.Second
		}
		log.Printf("upstream stream ended (%v); reconnecting in %s", err, delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
		// At most a few seconds: streams the server accepts meanwhile get their snapshot only then.
		delay = min(2*delay, 5*time.Second)
	}
}

// admit opens the client's request on the upstream and returns once the upstream accepted it (nil)
// or refused it (its status). The upstream call is then dropped: the hub serves the stream.
func (e *edge) admit(ctx context.Context, request []byte) error {
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, outgoing(ctx)), 30*time.Second)
	defer cancel()
	generation := e.vouched.current()
	if _, err := e.openStream(ctx, request); err != nil {
		return err
	}
	e.vouched.addCredential(generation, authorization(ctx))
	return nil
}

// openStream calls StreamPredictions on the upstream and waits for its answer: its headers (the
// stream, accepted), or the status it refused the call with.
func (e *edge) openStream(ctx context.Context, request []byte) (grpc.ClientStream, error) {
	up, err := e.upstream.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, streamMethod, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return nil, err
	}
	if err := up.SendMsg(&request); err != nil {
		return nil, err
	}
	if err := up.CloseSend(); err != nil {
		return nil, err
	}
	header, err := up.Header()
	if err != nil {
		return nil, err
	}
	if header != nil {
		return up, nil
	}
	// No headers: a trailers-only response, i.e. the call already ended; RecvMsg has its status.
	var message []byte
	if err := up.RecvMsg(&message); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return nil, status.Error(codes.Unavailable, "the server ended the stream at once")
}

func (e *edge) streamPredictions(_ any, stream grpc.ServerStream) error {
	var request []byte
	if err := stream.RecvMsg(&request); err != nil {
		return err
	}
	caller, exempt := identify(stream.Context(), e.callers.exempt)
	if !e.callers.take(caller, exempt) {
		// Before admission, so a caller at its bound costs the server nothing; same words as the server's.
		return status.Errorf(codes.ResourceExhausted,
			"caller has %d prediction streams open, the most one caller may hold (grpc.max_streams_per_caller): close one first",
			e.callers.limit)
	}
	defer e.callers.release(caller)
	if err := e.admit(stream.Context(), request); err != nil {
		return err
	}
	f, err := parseRequest(request) // the server accepted it, so it parses; if not, say so
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "malformed StreamPredictionsRequest: %v", err)
	}
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	s := e.hub.subscribe(f)
	defer func() {
		e.hub.unsubscribe(s)
		if n := s.dropped.Load(); n > 0 {
			log.Printf("slow subscriber dropped %d predictions", n)
		}
	}()
	for {
		select {
		case wire, ok := <-s.queue:
			if !ok { // drained: UNAVAILABLE is the code clients retry
				return status.Error(codes.Unavailable, "stream ended (the edge is shutting down or lost the server): reconnect")
			}
			if err := stream.SendMsg(&wire); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

func (e *edge) getLatestPrediction(_ any, ctx context.Context, decode func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var request []byte
	if err := decode(&request); err != nil {
		return nil, err
	}
	auth := authorization(ctx)
	l, exact := parseLatestRequest(request)
	if exact && e.vouched.answers(auth, l) {
		if wire, ok := e.hub.latestOf(l.key); ok {
			e.latestFromEdge.Add(1)
			return &wire, nil // GetLatestPredictionResponse is StreamPredictionsResponse's encoding
		}
	}
	e.latestFromUpstream.Add(1)
	generation := e.vouched.current()
	var response []byte
	var header, trailer metadata.MD
	err := e.upstream.Invoke(
		metadata.NewOutgoingContext(ctx, outgoing(ctx)), latestMethod, &request, &response,
		grpc.ForceCodec(rawCodec{}), grpc.Header(&header), grpc.Trailer(&trailer),
	)
	if passedAuthentication(err) {
		e.vouched.addCredential(generation, auth)
	}
	if code := status.Code(err); exact && (code == codes.OK || code == codes.NotFound) {
		e.vouched.addLookup(generation, l)
	}
	_ = grpc.SetHeader(ctx, header)
	_ = grpc.SetTrailer(ctx, trailer)
	if err != nil {
		return nil, err
	}
	return &response, nil
}

// relay passes any other call through to the upstream: messages, headers, trailers and status.
func (e *edge) relay(_ any, down grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(down)
	if !ok {
		return status.Error(codes.Internal, "no method")
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(down.Context(), outgoing(down.Context())))
	defer cancel()
	up, err := e.upstream.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	go func() {
		for {
			var m []byte
			if err := down.RecvMsg(&m); err != nil {
				if errors.Is(err, io.EOF) {
					_ = up.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if err := up.SendMsg(&m); err != nil {
				return
			}
		}
	}()
	if header, err := up.Header(); err == nil && len(header) > 0 {
		if err := down.SendHeader(header); err != nil {
			return err
		}
	}
	for {
		var m []byte
		if err := up.RecvMsg(&m); err != nil {
			down.SetTrailer(up.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := down.SendMsg(&m); err != nil {
			return err
		}
	}
}

// metrics serves Prometheus's text format: a handful of figures need no client library.
func (e *edge) metrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "# HELP cryptopredict_edge_subscribers Open StreamPredictions streams on the edge.\n")
	fmt.Fprintf(w, "# TYPE cryptopredict_edge_subscribers gauge\ncryptopredict_edge_subscribers %d\n", e.hub.count())
	fmt.Fprintf(w, "# HELP cryptopredict_edge_dropped_total Predictions dropped for slow subscribers (oldest first).\n")
	fmt.Fprintf(w, "# TYPE cryptopredict_edge_dropped_total counter\ncryptopredict_edge_dropped_total %d\n", e.hub.dropped.Load())
	fmt.Fprintf(w, "# HELP cryptopredict_edge_latest_total GetLatestPrediction calls, by who answered them.\n")
	fmt.Fprintf(w, "# TYPE cryptopredict_edge_latest_total counter\n")
	fmt.Fprintf(w, "cryptopredict_edge_latest_total{answered=\"edge\"} %d\n", e.latestFromEdge.Load())
	fmt.Fprintf(w, "cryptopredict_edge_latest_total{answered=\"upstream\"} %d\n", e.latestFromUpstream.Load())
}

func main() {
	listen := flag.String("listen", "127.0.0.1:50052", "address to serve on")
	upstream := flag.String("upstream", "127.0.0.1:50051", "the Python gRPC server")
	queueSize := flag.Int("queue-size", 256, "predictions queued per subscriber before the oldest is dropped")
	certFile := flag.String("tls-cert", "", "PEM certificate chain: serve TLS (with -tls-key)")
	keyFile := flag.String("tls-key", "", "PEM private key")
	upstreamCA := flag.String("upstream-ca", "", "verify a TLS upstream against this CA bundle (empty: plaintext upstream)")
	metricsAddr := flag.String("metrics", "", "serve /metrics on this address (empty: off)")
	maxStreams := flag.Int("max-streams-per-caller", 0, "streams one caller may hold (0: no bound)")
	exemptHosts := flag.String("stream-limit-exempt", "", "comma-separated addresses not held to that bound")
	flag.Parse()
	if (*certFile == "") != (*keyFile == "") {
		log.Fatal("set both -tls-cert and -tls-key, or neither")
	}

	upstreamCreds := insecure.NewCredentials()
	if *upstreamCA != "" {
		creds, err := credentials.NewClientTLSFromFile(*upstreamCA, "")
		if err != nil {
			log.Fatal(err)
		}
		upstreamCreds = creds
	}
	conn, err := grpc.Dial(*upstream, grpc.WithTransportCredentials(upstreamCreds))
	if err != nil {
		log.Fatal(err)
	}
	if *queueSize < 1 {
		log.Fatal("-queue-size must be at least 1")
	}
	e := &edge{
		hub:      newHub(*queueSize),
		upstream: conn,
		token:    os.Getenv(tokenEnv),
		health:   health.NewServer(),
		vouched:  newVouched(),
		callers:  newCallers(*maxStreams, strings.FieldsFunc(*exemptHosts, func(r rune) bool { return r == ',' })),
	}
	e.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	e.health.SetServingStatus(service, healthpb.HealthCheckResponse_NOT_SERVING)

	options := []grpc.ServerOption{grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(e.relay)}
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Fatal(err)
		}
		options = append(options, grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	}
	server := grpc.NewServer(options...)
	server.RegisterService(&grpc.ServiceDesc{
		ServiceName: service,
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "GetLatestPrediction", Handler: e.getLatestPrediction}},
		Streams:     []grpc.StreamDesc{{StreamName: "StreamPredictions", Handler: e.streamPredictions, ServerStreams: true}},
	}, e)
	healthpb.RegisterHealthServer(server, e.health)

	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	if *metricsAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/metrics", e.metrics)
		go func() { log.Print(http.ListenAndServe(*metricsAddr, mux)) }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go e.feed(ctx)
	go func() {
		<-ctx.Done()
		log.Printf("shutting down: draining %d streams", e.hub.count())
		e.health.Shutdown()
		e.hub.close()
		done := make(chan struct{})
		go func() { server.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			server.Stop()
		}
	}()
	log.Printf("serving on %s, following %s", lis.Addr(), *upstream)
	if err := server.Serve(lis); err != nil {
		log.Fatal(err)
	}
	log.Printf("stopped; %d predictions dropped for slow subscribers", e.hub.dropped.Load())
}
