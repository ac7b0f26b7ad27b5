// Command temporal-relay serves a Temporal frontend the way a production cluster or Temporal Cloud
// does, for the local cluster profile, in front of a dev server (`temporal server start-dev`, which
// has no TLS options):
//
//   - TLS only, and a client certificate signed by -client-ca is required: no certificate, no
//     connection.
//   - Every call must carry `authorization: Bearer <key>`; anything else is refused with
//     UNAUTHENTICATED. The key is read from -api-key-file or the TEMPORAL_RELAY_API_KEY variable,
//     never from the command line, which any user of the machine can read.
//   - Every call, whatever its service and method, is relayed to -upstream as bytes, streaming both
//     ways, with its metadata (less the key), deadline, headers, trailers and status.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/encoding/gzip" // the Temporal SDKs compress their requests with gzip
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// maxMessage is the largest message relayed either way (Temporal's own limit is lower).
const maxMessage = 128 << 20

// rawCodec passes messages through as the client and the server encoded them.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*b = append([]byte(nil), data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

type relay struct {
	upstream *grpc.ClientConn
	key      apiKey
}

// outgoing is the client's metadata to send upstream: its own headers less the key, without the
// transport's, which the upstream call sets itself.
func outgoing(ctx context.Context) metadata.MD {
	md, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range md {
		if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") || k == "authorization" ||
			k == "content-type" || k == "user-agent" || k == "te" {
			continue
		}
		out[k] = v
	}
	return out
}

// handle relays one call of any method: messages both ways, then headers, trailers and status.
func (r *relay) handle(_ any, down grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(down)
	if !ok {
		return status.Error(codes.Internal, "no method")
	}
	if err := r.key.check(down.Context()); err != nil {
		log.Printf("refused %s: %v", method, status.Convert(err).Message())
		return err
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(down.Context(), outgoing(down.Context())))
	defer cancel()
	desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	up, err := r.upstream.NewStream(ctx, desc, method, grpc.ForceCodec(rawCodec{}))
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
				return // RecvMsg below gets the upstream's status
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

// newServer serves every method through the relay over `creds`.
func newServer(r *relay, creds credentials.TransportCredentials) *grpc.Server {
	return grpc.NewServer(
		grpc.Creds(creds),
		grpc.ForceServerCodec(rawCodec{}),
		grpc.UnknownServiceHandler(r.handle),
		grpc.MaxRecvMsgSize(maxMessage),
		// The SDKs ping idle connections every 30 s; grpc-go would close them as abusive (its floor is 5 min).
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
}

// serverTLS: our certificate, and a client certificate signed by the CA in caFile required.
func serverTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate in %s", caFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:7243", "address to serve TLS on")
	upstream := flag.String("upstream", "127.0.0.1:7233", "the Temporal frontend to relay to (plaintext)")
	certFile := flag.String("tls-cert", "", "PEM certificate chain of this server")
	keyFile := flag.String("tls-key", "", "PEM private key of this server")
	clientCA := flag.String("client-ca", "", "PEM CA that client certificates must be signed by")
	keyFileFlag := flag.String("api-key-file", "", "file holding the API key (else $"+keyEnv+")")
	flag.Parse()
	if *certFile == "" || *keyFile == "" || *clientCA == "" {
		log.Fatal("-tls-cert, -tls-key and -client-ca are required")
	}
	key, err := loadKey(*keyFileFlag)
	if err != nil {
		log.Fatal(err)
	}
	config, err := serverTLS(*certFile, *keyFile, *clientCA)
	if err != nil {
		log.Fatal(err)
	}
	conn, err := grpc.Dial(*upstream,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)),
	)
	if err != nil {
		log.Fatal(err)
	}
	server := newServer(&relay{upstream: conn, key: key}, credentials.NewTLS(config))
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		server.Stop() // no state to drain: clients retry their calls elsewhere or later
	}()
	log.Printf("serving TLS on %s (client certificate and API key required), relaying to %s", lis.Addr(), *upstream)
	if err := server.Serve(lis); err != nil {
		log.Fatal(err)
	}
}
