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

	"github.com/twmb/franz-go/pkg/kerr"
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

// The raw record of a dead letter is what Python's decode("utf-8", "replace") makes of it (written by
// Python 3.11), as the Python stages write theirs.
func TestADeadLettersRawIsThePythonReplacingDecode(t *testing.T) {
	for input, want := range map[string]string{
		"\xff\xfe":             "\uFFFD\uFFFD",
		"a\xe2\x82":            "a\uFFFD", // a truncated sequence: one
		"\xe2\x82z":            "\uFFFDz",
		"\xe2\x82\xac":         "\u20ac",
		"\xc0\xaf":             "\uFFFD\uFFFD",       // overlong: C0 never starts a character
		"\xed\xa0\x80":         "\uFFFD\uFFFD\uFFFD", // a surrogate
		"\xf0\x9f\x98":         "\uFFFD",
		"\xf0\x9f\x98\x80":     "\U0001f600",
		"\xf4\x90\x80\x80":     "\uFFFD\uFFFD\uFFFD\uFFFD", // above U+10FFFF
		"\xf0\x80\x80\x80":     "\uFFFD\uFFFD\uFFFD\uFFFD",
		"\x80\x80":             "\uFFFD\uFFFD",
		"\xe0\x80\x80":         "\uFFFD\uFFFD\uFFFD",
		"\xe0\xa0":             "\uFFFD",
		"\xf5\x80":             "\uFFFD\uFFFD",
		"\xef\xbf\xbd\xff":     "\uFFFD\uFFFD", // U+FFFD itself, then a bad byte
		"{\"pair\": \xff}":     "{\"pair\": \uFFFD}",
		"\xc2":                 "\uFFFD",
		"\xe1\x80\xe1\x80\x80": "\uFFFD\u1000",
		"\xf1\x80\x80\xc2\xa9": "\uFFFD\u00a9",
		"plain, and modèle 😀":  "plain, and modèle 😀",
		"":                     "",
	} {
		if got := decodeReplacing([]byte(input)); got != want {
			t.Errorf("%q: %q, want %q", input, got, want)
		}
	}
}

func TestCatchingUpNeedsEveryPartitionReadAsFarAsItWentAtStart(t *testing.T) {
	c := newCatchUp(map[int32]span{0: {0, 10}, 1: {7, 7}, 2: {0, 3}}) // partition 1 holds nothing
	if c.read(0, 9) {                                                 // partition 0 done; 2 not yet
		t.Fatal("caught up with a partition left")
	}
	if c.read(1, 500) || c.read(2, 1) {
		t.Fatal("caught up too early")
	}
	if !c.read(2, 2) || !c.done() {
		t.Fatal("not caught up with every partition read")
	}
	if empty := newCatchUp(map[int32]span{}); !empty.done() {
		t.Fatal("an empty topic is not caught up with")
	}
	// A transaction marker at the end takes the last offset: read (and skipped), it counts.
	marker := newCatchUp(map[int32]span{0: {0, 5}})
	if !marker.read(0, 4) {
		t.Fatal("the marker's offset does not count")
	}
}

// A partition that will never reach its end at start does not hold the edge back: one that ends lower
// now (truncated, or deleted and created again) is read to its end now, one whose records before that
// end were deleted needs nothing, and so does one no longer listed.
func TestCatchingUpEndsWhenNothingIsLeftBelowTheEndAtStart(t *testing.T) {
	c := newCatchUp(map[int32]span{0: {0, 10}, 1: {0, 10}, 2: {0, 10}, 3: {0, 10}})
	c.read(0, 2)
	if c.holds(0, span{0, 10}) || c.holds(0, span{0, 12}) { // written to since: still 10
		t.Fatal("caught up with partition 0 at 3 of 10")
	}
	if c.holds(0, span{0, 5}) { // truncated to 5: read to 5 now
		t.Fatal("caught up with partition 0 at 3 of 5")
	}
	c.read(0, 4)
	if _, left := c.pending[0]; left {
		t.Fatal("partition 0 read to its end now, yet pending")
	}
	c.holds(1, span{10, 10}) // every record before 10 deleted
	if _, left := c.pending[1]; left {
		t.Fatal("partition 1 holds nothing before 10, yet pending")
	}
	c.holds(2, span{-1, -1}) // nothing known: no change
	if c.pending[2] != 10 {
		t.Fatalf("partition 2 pending %d, want 10", c.pending[2])
	}
	// Deleted and created again: what was read is forgotten, and the offsets listed again rule.
	c.read(2, 8)
	c.restart()
	if c.relisted(map[int32]span{2: {0, 3}, 3: {0, 4}}) || c.pending[2] != 3 || c.pending[3] != 4 {
		t.Fatalf("after the topic was created again: pending %v", c.pending)
	}
	c.read(2, 2)
	if !c.relisted(map[int32]span{}) { // the topic is gone: nothing to wait for
		t.Fatalf("pending %v with the topic gone", c.pending)
	}
}

// A fetch's partition errors count, are logged once in a while, and mark a topic deleted; the poll's own
// time limit is none of that.
func TestPartitionErrorsAreCountedAndATopicDeletedIsTakenUpAgain(t *testing.T) {
	c := &consumer{config: plaintext(), errors: newLogLimiter(time.Minute)}
	var logged []string
	c.errors.output = func(s string) { logged = append(logged, s) }
	progress := newCatchUp(map[int32]span{})
	unknown := kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "p.predictions", Partitions: []kgo.FetchPartition{
		{Partition: 0, Err: kerr.UnknownTopicID}, {Partition: 1, Err: kerr.UnknownTopicID},
	}}}}}
	for range 3 {
		if !c.take(unknown, &progress) {
			t.Fatal("UNKNOWN_TOPIC_ID of the topic is not a deleted topic")
		}
	}
	if c.kafkaErrors.Load() != 6 || len(logged) != 2 {
		t.Fatalf("%d errors counted, logged %q", c.kafkaErrors.Load(), logged)
	}
	other := kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "other", Partitions: []kgo.FetchPartition{{Partition: 0, Err: kerr.UnknownTopicID}}}}}}
	if c.take(other, &progress) || c.take(kgo.NewErrFetch(context.DeadlineExceeded), &progress) {
		t.Fatal("another topic's error, or the poll's time limit, taken for a deleted topic")
	}
	if c.kafkaErrors.Load() != 7 {
		t.Fatalf("%d errors counted, want 7: the poll's time limit is no error", c.kafkaErrors.Load())
	}
}

// Kafka is there while brokers answer fetches, unless all they brought lately were partition errors.
func TestKafkaIsConnectedWhileFetchesAnswerWithMoreThanPartitionErrors(t *testing.T) {
	c := &consumer{}
	now := time.Now()
	if c.connected() {
		t.Fatal("connected before any fetch")
	}
	c.lastFetch.Store(now.UnixNano())
	if !c.connected() {
		t.Fatal("an answered fetch is not connected")
	}
	c.lastPartitionError.Store(now.UnixNano()) // e.g. the topic deleted: only errors since
	if c.connected() {
		t.Fatal("connected with nothing but partition errors")
	}
	c.lastPartitionRead.Store(now.Add(time.Millisecond).UnixNano()) // records again
	if !c.connected() {
		t.Fatal("not connected once a partition is read again")
	}
	c.lastPartitionRead.Store(0)
	c.lastPartitionError.Store(now.Add(-connectedWithin).UnixNano()) // an old error, idle fetches since
	if !c.connected() {
		t.Fatal("an old partition error still counts")
	}
	c.lastFetch.Store(now.Add(-connectedWithin).UnixNano())
	if c.connected() {
		t.Fatal("connected without an answer for connectedWithin")
	}
}

func TestARepeatedErrorIsLoggedOnceInAWhileWithTheCountLeftOut(t *testing.T) {
	l := newLogLimiter(time.Minute)
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	var logged []string
	l.output = func(s string) { logged = append(logged, s) }
	for range 5 {
		l.printf("p[0]", "fetching p[%d]: gone", 0)
		l.printf("p[1]", "fetching p[%d]: gone", 1)
	}
	now = now.Add(time.Minute)
	l.printf("p[0]", "fetching p[%d]: gone", 0)
	equal(t, logged, "fetching p[0]: gone", "fetching p[1]: gone",
		"fetching p[0]: gone (and 4 more times since it was last logged)")
}

// A dead letter never holds up reading: with the client's buffer full it fails at once, counted.
func TestADeadLetterNeverBlocksAndAFailureIsCounted(t *testing.T) {
	config := plaintext()
	config.brokers = []string{"127.0.0.1:1"} // nobody: every letter stays buffered
	c, err := newConsumer(config, newHub(1), kgo.MaxBufferedRecords(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.client.Close()
	r := &kgo.Record{Topic: "p.predictions", Value: []byte("x"), Timestamp: time.Now()}
	done := make(chan struct{})
	go func() {
		for range 3 {
			c.sendDeadLetter(r, errors.New("invalid"))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("sending dead letters blocked")
	}
	for deadline := time.Now().Add(5 * time.Second); c.deadLetterErrors.Load() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d dead letter errors, want 2 (the buffer holds one)", c.deadLetterErrors.Load())
		}
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
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &edge{
		hub:      newHub(4),
		consumer: &consumer{delay: newHistogram(latencyBuckets), errors: newLogLimiter(errorLogEvery)},
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

func TestHealthNeedsTheServerAndTheCatchUpNotKafka(t *testing.T) {
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
		t.Fatal("not serving with the server and the topic read")
	}
	// Kafka silent: the edge still relays and admits as the server does, so it stays among the
	// endpoints; the loss shows in cryptopredict_edge_kafka_connected and its alert.
	e.consumer.lastFetch.Store(time.Now().Add(-connectedWithin).UnixNano())
	e.refreshHealth()
	if check() != healthpb.HealthCheckResponse_SERVING || e.consumer.connected() {
		t.Fatal("Kafka's loss turned health, or is not seen")
	}
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
