package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// writeCertificates writes a CA and a client certificate it signed, as PEM files in dir.
func writeCertificates(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	write := func(name, kind string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	clientKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	clientTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "stream-edge"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	clientDER, err := x509.CreateCertificate(rand.Reader, clientTemplate, caTemplate, &clientKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	return write("ca.crt", "CERTIFICATE", caDER), write("client.crt", "CERTIFICATE", clientDER),
		write("client.key", "EC PRIVATE KEY", keyDER)
}

func plaintext() kafkaConfig {
	return kafkaConfig{
		brokers: []string{"127.0.0.1:9092"}, topic: "p.predictions", deadLetterTopic: "p.dead_letters",
		securityProtocol: "PLAINTEXT", saslMechanism: "SCRAM-SHA-512",
	}
}

func TestKafkaSettingsBecomeClientOptions(t *testing.T) {
	ca, cert, key := writeCertificates(t, t.TempDir())
	if opts, err := plaintext().options(); err != nil || len(opts) == 0 {
		t.Fatalf("plaintext: %v", err)
	}
	if config, err := plaintext().tlsConfig(); err != nil || config != nil || plaintext().mechanism() != nil {
		t.Fatal("plaintext has TLS or SASL")
	}
	secured := plaintext()
	secured.securityProtocol, secured.caFile, secured.certFile, secured.keyFile = "SASL_SSL", ca, cert, key
	secured.saslUsername, secured.saslPassword = "cryptopredict", "s3cret"
	if _, err := secured.options(); err != nil {
		t.Fatal(err)
	}
	config, err := secured.tlsConfig()
	if err != nil || config.RootCAs == nil || len(config.Certificates) != 1 {
		t.Fatalf("TLS config %+v, %v", config, err)
	}
	if m := secured.mechanism(); m == nil || m.Name() != "SCRAM-SHA-512" {
		t.Fatalf("mechanism %v", m)
	}
	ssl := plaintext()
	ssl.securityProtocol, ssl.caFile = "SSL", ca // one-way TLS, the brokers checked against the CA
	if config, err := ssl.tlsConfig(); err != nil || config.RootCAs == nil || len(config.Certificates) != 0 || ssl.mechanism() != nil {
		t.Fatalf("SSL: %+v, %v", config, err)
	}
	for name, broken := range map[string]func(c *kafkaConfig){
		"no brokers":              func(c *kafkaConfig) { c.brokers = nil },
		"no topic":                func(c *kafkaConfig) { c.topic = "" },
		"no dead-letter topic":    func(c *kafkaConfig) { c.deadLetterTopic = "" },
		"unknown protocol":        func(c *kafkaConfig) { c.securityProtocol = "SASL_PLAINTEXT" },
		"certificate without key": func(c *kafkaConfig) { c.keyFile = "" },
		"no password":             func(c *kafkaConfig) { c.saslPassword = "" },
		"no username":             func(c *kafkaConfig) { c.saslUsername = "" },
		"another mechanism":       func(c *kafkaConfig) { c.saslMechanism = "PLAIN" },
		"missing CA file":         func(c *kafkaConfig) { c.caFile = filepath.Join(t.TempDir(), "none") },
		"a CA file without PEM":   func(c *kafkaConfig) { c.caFile = key },
		"TLS files in plaintext":  func(c *kafkaConfig) { c.securityProtocol = "PLAINTEXT" },
	} {
		c := secured
		broken(&c)
		if _, err := c.options(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestARefusedRecordBecomesADeadLetterNamingItsPlace(t *testing.T) {
	at := time.Date(2024, 5, 1, 12, 0, 0, 123_000_000, time.UTC)
	r := &kgo.Record{Topic: "p.predictions", Partition: 2, Offset: 41, Timestamp: at, Value: []byte("{\"pair\": \xff}")}
	b, err := json.Marshal(newDeadLetter(r, errors.New("invalid JSON: invalid UTF-8 at byte 9")))
	if err != nil {
		t.Fatal(err)
	}
	var letter map[string]string
	if err := json.Unmarshal(b, &letter); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{ // cryptopredict.models.market.DeadLetter
		"source": "stream_edge",
		"reason": "invalid prediction: invalid JSON: invalid UTF-8 at byte 9 (topic p.predictions, partition 2, offset 41)",
		"raw":    "{\"pair\": \uFFFD}",
		"at":     "2024-05-01T12:00:00.123000Z",
	}
	if len(letter) != len(want) {
		t.Fatalf("letter %v", letter)
	}
	for k, v := range want {
		if letter[k] != v {
			t.Errorf("%s: %q, want %q", k, letter[k], v)
		}
	}
}

func TestCatchingUpNeedsEveryPartitionReadAsFarAsItWentAtStart(t *testing.T) {
	c := catchUp{pending: map[int32]int64{0: 10, 2: 3}}
	if c.read(0, 9) { // partition 0 done; 2 not yet
		t.Fatal("caught up with a partition left")
	}
	if c.read(1, 500) || c.read(2, 1) {
		t.Fatal("caught up too early")
	}
	if !c.read(2, 2) || !c.done() {
		t.Fatal("not caught up with every partition read")
	}
	if empty := (catchUp{pending: map[int32]int64{}}); !empty.done() {
		t.Fatal("an empty topic is not caught up with")
	}
	// A transaction marker at the end takes the last offset: read (and skipped), it counts.
	marker := catchUp{pending: map[int32]int64{0: 5}}
	if !marker.read(0, 4) {
		t.Fatal("the marker's offset does not count")
	}
}

// fakeStream is a client's StreamPredictions call that sends request.
type fakeStream struct {
	grpc.ServerStream
	ctx     context.Context
	request []byte
}

func (s *fakeStream) Context() context.Context { return s.ctx }

func (s *fakeStream) RecvMsg(m any) error {
	*m.(*[]byte) = s.request
	return nil
}

// testEdge is an edge whose server is nowhere: a call that reaches it fails UNAVAILABLE.
func testEdge(t *testing.T) *edge {
	conn, err := grpc.Dial("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &edge{
		hub:      newHub(4),
		consumer: &consumer{delay: newHistogram(latencyBuckets)},
		upstream: conn,
		health:   health.NewServer(),
		vouched:  newVouched(),
		callers:  newCallers(0, nil),
	}
}

func TestWhileCatchingUpNoStreamIsServedAndLookupsGoToTheServer(t *testing.T) {
	e := testEdge(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := e.streamPredictions(nil, &fakeStream{ctx: ctx, request: request("", "BTC/USD")})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "catching up") {
		t.Fatalf("a stream while catching up: %v", err)
	}
	if e.hub.count() != 0 || e.callers.open[""] != 0 {
		t.Fatal("a refused stream holds a subscription or a slot")
	}
	// The server vouched for the caller and the key, and the edge has a prediction: it still asks the
	// server until it has caught up.
	btc := key{"kraken", "BTC/USD", 60, 60}
	e.vouched.addCredential(e.vouched.current(), "")
	e.vouched.addLookup(e.vouched.current(), lookup{btc, ""})
	e.hub.publish(encoded("BTC/USD", 0, time.Second))
	lookupRequest := func(m any) error {
		*m.(*[]byte) = []byte{10, 7, 'B', 'T', 'C', '/', 'U', 'S', 'D', 16, 60, 24, 60}
		return nil
	}
	if _, err := e.getLatestPrediction(nil, ctx, lookupRequest, nil); status.Code(err) != codes.Unavailable {
		t.Fatalf("a lookup while catching up: %v", err)
	}
	if e.latestFromUpstream.Load() != 1 || e.latestFromEdge.Load() != 0 {
		t.Fatal("a lookup while catching up was answered by the edge")
	}
	e.consumer.caughtUp.Store(true)
	response, err := e.getLatestPrediction(nil, ctx, lookupRequest, nil)
	if err != nil || e.latestFromEdge.Load() != 1 {
		t.Fatalf("a vouched lookup once caught up: %v", err)
	}
	if wire, _ := e.hub.latestOf(btc); string(*response.(*[]byte)) != string(wire) {
		t.Fatal("the edge's answer is not its latest prediction")
	}
}

func TestHealthNeedsTheServerTheCatchUpAndKafka(t *testing.T) {
	e := testEdge(t)
	check := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		response, err := e.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatal(err)
		}
		return response.Status
	}
	e.health.SetServingStatus(service, healthpb.HealthCheckResponse_NOT_SERVING)
	e.upstreamServing.Store(true)
	e.consumer.lastFetch.Store(time.Now().UnixNano())
	e.refreshHealth()
	if check() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatal("serving while catching up")
	}
	e.consumer.caughtUp.Store(true)
	e.refreshHealth()
	if check() != healthpb.HealthCheckResponse_SERVING {
		t.Fatal("not serving with the server, the topic read and Kafka answering")
	}
	e.consumer.lastFetch.Store(time.Now().Add(-connectedWithin).UnixNano()) // Kafka silent
	e.refreshHealth()
	if check() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatal("serving without Kafka")
	}
	e.consumer.lastFetch.Store(time.Now().UnixNano())
	e.refreshHealth()
	s := e.hub.subscribe(filter{exchange: anyExchange})
	e.hub.publish(encoded("BTC/USD", 1, time.Second))
	e.upstreamLost()
	if check() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatal("serving without the server")
	}
	equal(t, drain(s), "BTC/USD@12:01", "closed")
	if _, ok := e.hub.latestOf(key{"kraken", "BTC/USD", 60, 60}); !ok {
		t.Fatal("the predictions went with the server")
	}
}

func TestMetricsShowKafkaAndTheDelay(t *testing.T) {
	e := testEdge(t)
	e.consumer.invalid.Add(2)
	e.consumer.delay.observe(0.003)
	e.consumer.delay.observe(100)
	w := httptest.NewRecorder()
	e.metrics(w, nil)
	text := w.Body.String()
	for _, line := range []string{
		"cryptopredict_edge_subscribers 0",
		"cryptopredict_edge_kafka_connected 0",
		"cryptopredict_edge_kafka_errors_total 0",
		"cryptopredict_edge_caught_up 0",
		"cryptopredict_edge_invalid_records_total 2",
		"cryptopredict_edge_upstream_serving 0",
		`cryptopredict_edge_latest_total{answered="edge"} 0`,
		`cryptopredict_edge_prediction_delay_seconds_bucket{le="0.0025"} 0`,
		`cryptopredict_edge_prediction_delay_seconds_bucket{le="0.005"} 1`,
		`cryptopredict_edge_prediction_delay_seconds_bucket{le="60"} 1`,
		`cryptopredict_edge_prediction_delay_seconds_bucket{le="+Inf"} 2`,
		"cryptopredict_edge_prediction_delay_seconds_sum 100.003",
		"cryptopredict_edge_prediction_delay_seconds_count 2",
	} {
		if !strings.Contains(text, line+"\n") {
			t.Errorf("no line %q in\n%s", line, text)
		}
	}
}
