// Command stream-edge serves StreamPredictions and GetLatestPrediction beside the Python gRPC server
// (grpc_server), which stays the one authority on what a request may ask and who may ask it.
//
// Python gRPC spends about 50 µs of CPU per message sent; a new prediction to 1,000 streams is 50 ms
// of one core, and its unary calls stall now and then for milliseconds. The edge reads the predictions
// topic from Kafka itself (kafka.go), as the server does, and sends each prediction to its own
// subscribers at a few µs a message, without a hop through the server.
//
//   - A record is checked against the server's validation and encoded as the server encodes it
//     (prediction.go): the edge never serves what the server would refuse, and serves the same bytes;
//     it also refuses a few forms the server tolerates and no producer of the project writes. A record
//     it refuses becomes a dead letter, is counted and logged with its topic, partition and offset; the
//     stream goes on.
//   - Like the server, it reads every partition from the earliest offset without a consumer group, so
//     the latest prediction per key is rebuilt at start. Until it has read as far as the topic went at
//     start it is not SERVING and refuses new streams with UNAVAILABLE, so no client gets a flood of old
//     predictions. A topic deleted and created again is read again from its start, streams open.
//   - A new subscription is first opened on the server with the client's request and metadata, and
//     served once the server has accepted it (its initial metadata): validation and authentication
//     answer exactly as the server's.
//   - Keys and subscriptions are by exchange too: "BTC/USD" on Kraken and on Coinbase are two keys, and a
//     request that names no exchange (from clients older than exchanges) means Kraken, as on the server.
//   - GetLatestPrediction is answered from the edge's latest predictions when, since the server last
//     came up, it has answered a lookup of that key and target (OK or NOT_FOUND) and accepted the
//     caller's authorization; anything else goes to the server, including any lookup with a field the
//     edge does not read (quantile_levels selects quantiles: the server builds that answer).
//   - The edge watches the server's health. When the server goes away, the edge's streams end with
//     UNAVAILABLE (clients reconnect, as they would to the server) and it forgets what the server
//     vouched for; it keeps its predictions, which come from Kafka.
//   - When Kafka goes away, streams go on: the client reconnects and reads on from where it was, and the
//     hub drops anything not newer than what it sent. Health stays SERVING (the server still answers the
//     relayed calls and admits streams); the loss shows in a metric, the log and an alert.
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
	"sync"
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
	// HTTP/2's own initial window, fixed: what clients send the edge is small requests, and a dynamic
	// window costs a round of PING frames with nearly every call to estimate a bandwidth never needed.
	staticWindow = 64 << 10
)

// rawCodec passes messages through as bytes: the edge relays what the server encoded, and sends the
// predictions it encoded itself. Health, its own and the server's, still speaks protobuf messages.
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
	consumer *consumer
	upstream *grpc.ClientConn
	health   *health.Server
	vouched  *vouched
	callers  *callers

	upstreamServing atomic.Bool // the server's health says SERVING

	healthMu sync.Mutex
	serving  bool // what health says

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

// watchUpstream follows the server's health for as long as ctx lives, reconnecting with backoff. While
// it says SERVING the server admits the edge's subscribers; when it goes away, or says anything else,
// the edge's streams end with UNAVAILABLE and what the server vouched for is forgotten.
func (e *edge) watchUpstream(ctx context.Context) {
	delay := time.Second
	for ctx.Err() == nil {
		started := time.Now()
		err := e.watch(ctx)
		wasServing := e.upstreamServing.Load()
		e.upstreamLost()
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > time.Minute {
			delay = time.Second
		}
		if wasServing || delay == time.Second { // once per outage, not at every try
			log.Printf("lost the server (%v); watching it again in %s", err, delay)
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
		// At most a few seconds: until then, new streams go to the server and fail as they would there.
		delay = min(2*delay, 5*time.Second)
	}
}

// watch returns when the server's health stream ends or stops saying SERVING (it says NOT_SERVING as it
// shuts down, before it drains its own streams).
func (e *edge) watch(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := healthpb.NewHealthClient(e.upstream).Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return err
	}
	for {
		response, err := stream.Recv()
		if err != nil {
			return err
		}
		if response.Status == healthpb.HealthCheckResponse_SERVING {
			if !e.upstreamServing.Swap(true) {
				log.Printf("the server at %s is serving", e.upstream.Target())
				e.refreshHealth()
			}
		} else if e.upstreamServing.Load() {
			return fmt.Errorf("the server says %s", response.Status)
		}
	}
}

// upstreamLost ends the edge's streams (clients reconnect, as they would to the server) and forgets what
// the server vouched for: the one that comes back may have other tokens or targets. The predictions
// stay: they come from Kafka. The generation moves before the streams end, so a stream admitted
// meanwhile sees it and ends too (streamPredictions).
func (e *edge) upstreamLost() {
	e.upstreamServing.Store(false)
	e.refreshHealth()
	e.vouched.reset()
	e.hub.endStreams()
}

// refreshHealth says SERVING while the server does and once the topic has been read as far as it went at
// start; NOT_SERVING otherwise (Kubernetes then sends new clients to another edge). Not Kafka: an edge
// that lost it still relays and admits like the server, and every edge would lose it together.
func (e *edge) refreshHealth() {
	serving := e.upstreamServing.Load() && e.consumer.caughtUp.Load()
	e.healthMu.Lock()
	defer e.healthMu.Unlock()
	if serving == e.serving {
		return
	}
	e.serving = serving
	status := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		status = healthpb.HealthCheckResponse_SERVING
	}
	e.health.SetServingStatus("", status)
	e.health.SetServingStatus(service, status)
}

// watchKafka logs losing Kafka (no fetch answered, or only partition errors, for a few seconds) and
// getting it back; cryptopredict_edge_kafka_connected says the same.
func (e *edge) watchKafka(ctx context.Context) {
	connected := false
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
		case <-ctx.Done():
			return
		}
		if now := e.consumer.connected(); now != connected {
			connected = now
			if connected {
				log.Printf("Kafka answers")
			} else {
				log.Printf("lost Kafka: no fetch answered without errors for %s (%d errors so far); streams go on", connectedWithin, e.consumer.kafkaErrors.Load())
			}
		}
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
	if !e.consumer.caughtUp.Load() {
		return status.Error(codes.Unavailable, "the edge is catching up with the predictions topic: retry in a few seconds")
	}
	generation := e.vouched.current()
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
	// The client going away ends the queue, so the loop below waits on the queue alone: a select on the
	// context as well cost a tenth of the edge's CPU in a 1,000-subscriber fan-out.
	stop := context.AfterFunc(stream.Context(), func() { e.hub.end(s) })
	defer func() {
		stop()
		e.hub.end(s)
		if n := s.dropped.Load(); n > 0 {
			log.Printf("slow subscriber dropped %d predictions", n)
		}
	}()
	if e.vouched.current() != generation { // the server went away since it admitted this stream
		return status.Error(codes.Unavailable, "the edge lost the server: reconnect")
	}
	var wire []byte // one variable for every message: SendMsg does not keep it
	var ok bool
	for {
		if wire, ok = <-s.queue; !ok {
			break
		}
		if err := stream.SendMsg(&wire); err != nil {
			return err
		}
	}
	if err := stream.Context().Err(); err != nil { // the client went away
		return err
	}
	// drained: UNAVAILABLE is the code clients retry
	return status.Error(codes.Unavailable, "stream ended (the edge is shutting down or lost the server): reconnect")
}

func (e *edge) getLatestPrediction(_ any, ctx context.Context, decode func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var request []byte
	if err := decode(&request); err != nil {
		return nil, err
	}
	auth := authorization(ctx)
	l, exact := parseLatestRequest(request)
	if exact && e.consumer.caughtUp.Load() && e.vouched.answers(auth, l) {
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
	brokers := flag.String("kafka-brokers", "127.0.0.1:9092", "comma-separated Kafka bootstrap servers")
	topic := flag.String("kafka-topic", "predictions", "the predictions topic (with the deployment's topic prefix)")
	deadLetters := flag.String("kafka-dead-letter-topic", "dead_letters", "where refused records go, as DeadLetter JSON")
	protocol := flag.String("kafka-security-protocol", "PLAINTEXT", "PLAINTEXT, SSL or SASL_SSL")
	kafkaCA := flag.String("kafka-ca-file", "", "CA bundle the brokers are checked against (empty: the system's roots)")
	kafkaCert := flag.String("kafka-cert-file", "", "client certificate, for brokers that require mutual TLS (with -kafka-key-file)")
	kafkaKey := flag.String("kafka-key-file", "", "the client certificate's key")
	mechanism := flag.String("kafka-sasl-mechanism", "SCRAM-SHA-512", "SASL mechanism with SASL_SSL")
	username := flag.String("kafka-sasl-username", "", "SASL user with SASL_SSL (the password: $"+saslPasswordEnv+")")
	flag.Parse()
	tuneGC()
	if (*certFile == "") != (*keyFile == "") {
		log.Fatal("set both -tls-cert and -tls-key, or neither")
	}
	if *queueSize < 1 {
		log.Fatal("-queue-size must be at least 1")
	}
	commaSeparated := func(s string) []string { return strings.FieldsFunc(s, func(r rune) bool { return r == ',' }) }

	upstreamCreds := insecure.NewCredentials()
	if *upstreamCA != "" {
		creds, err := credentials.NewClientTLSFromFile(*upstreamCA, "")
		if err != nil {
			log.Fatal(err)
		}
		upstreamCreds = creds
	}
	// The dns resolver (NewClient's default) takes an address or host:port, as -upstream is given.
	conn, err := grpc.NewClient(*upstream, grpc.WithTransportCredentials(upstreamCreds))
	if err != nil {
		log.Fatal(err)
	}
	h := newHub(*queueSize)
	kafka, err := newConsumer(kafkaConfig{
		brokers:          commaSeparated(*brokers),
		topic:            *topic,
		deadLetterTopic:  *deadLetters,
		securityProtocol: *protocol,
		caFile:           *kafkaCA,
		certFile:         *kafkaCert,
		keyFile:          *kafkaKey,
		saslMechanism:    *mechanism,
		saslUsername:     *username,
		saslPassword:     os.Getenv(saslPasswordEnv),
	}, h)
	if err != nil {
		log.Fatal(err)
	}
	e := &edge{
		hub:      h,
		consumer: kafka,
		upstream: conn,
		health:   health.NewServer(),
		vouched:  newVouched(),
		callers:  newCallers(*maxStreams, commaSeparated(*exemptHosts)),
	}
	e.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	e.health.SetServingStatus(service, healthpb.HealthCheckResponse_NOT_SERVING)

	options := []grpc.ServerOption{
		grpc.ForceServerCodec(rawCodec{}),
		grpc.UnknownServiceHandler(e.relay),
		grpc.StaticStreamWindowSize(staticWindow),
		grpc.StaticConnWindowSize(staticWindow),
	}
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
	go kafka.run(ctx, e.refreshHealth)
	go e.watchKafka(ctx)
	go e.watchUpstream(ctx)
	go func() {
		<-ctx.Done()
		log.Printf("shutting down: draining %d streams", e.hub.count())
		e.health.Shutdown() // NOT_SERVING from now on, whatever the server and Kafka say
		e.hub.close()
		done := make(chan struct{})
		go func() { server.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			server.Stop()
		}
	}()
	log.Printf("serving on %s; admission by %s; predictions from %s on %s", lis.Addr(), *upstream, *topic, *brokers)
	if err := server.Serve(lis); err != nil {
		log.Fatal(err)
	}
	kafka.close()
	log.Printf("stopped; %d predictions dropped for slow subscribers", e.hub.dropped.Load())
}
