package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

const (
	// The SCRAM password is a secret: from the environment, never the command line.
	saslPasswordEnv = "STREAM_EDGE_KAFKA_SASL_PASSWORD"
	// DeadLetter.source of the records the edge refuses.
	deadLetterSource = "stream_edge"
	// An idle fetch returns after fetchMaxWait; none answered for connectedWithin means Kafka is lost.
	fetchMaxWait    = time.Second
	connectedWithin = 5 * time.Second
	// While catching up, how often the topic's offsets are listed again: a partition that now ends
	// lower, or was emptied, must not hold the edge back for ever.
	relistEvery = 5 * time.Second
	// A dead letter Kafka has not taken by then fails (counted), rather than be retried for ever.
	deadLetterTimeout = 30 * time.Second
	// The same error of one partition is logged once in this long (with the count of the ones left out).
	errorLogEvery = time.Minute
)

// kafkaConfig is how the edge reaches the predictions topic: the project's KafkaSettings, which
// grpc_server/edge.py passes as flags (cryptopredict/kafka_client.py configures the Python clients alike).
type kafkaConfig struct {
	brokers          []string
	topic            string
	deadLetterTopic  string
	securityProtocol string // PLAINTEXT, SSL or SASL_SSL
	caFile           string // brokers' CA bundle ("": the system's roots)
	certFile         string // client certificate and key, for brokers that require mutual TLS
	keyFile          string
	saslMechanism    string // SCRAM-SHA-512, the one the project uses
	saslUsername     string
	saslPassword     string
}

func (c kafkaConfig) validate() error {
	switch {
	case len(c.brokers) == 0:
		return errors.New("no Kafka bootstrap servers")
	case c.topic == "" || c.deadLetterTopic == "":
		return errors.New("name the predictions topic and the dead-letter topic")
	case (c.certFile == "") != (c.keyFile == ""):
		return errors.New("set both the Kafka client certificate and key, or neither")
	}
	switch c.securityProtocol {
	case "PLAINTEXT":
		if c.caFile != "" || c.certFile != "" {
			return errors.New("Kafka TLS files given with security protocol PLAINTEXT")
		}
	case "SSL", "SASL_SSL":
	default:
		return fmt.Errorf("Kafka security protocol %q: PLAINTEXT, SSL or SASL_SSL", c.securityProtocol)
	}
	if c.securityProtocol == "SASL_SSL" {
		if c.saslMechanism != "SCRAM-SHA-512" {
			return fmt.Errorf("SASL mechanism %q: SCRAM-SHA-512 is the one supported", c.saslMechanism)
		}
		if c.saslUsername == "" || c.saslPassword == "" {
			return fmt.Errorf("SASL_SSL needs a username and the password in %s", saslPasswordEnv)
		}
	}
	return nil
}

// tlsConfig checks the brokers against the CA bundle (or the system's roots) and presents the client
// certificate when one is set; nil for PLAINTEXT.
func (c kafkaConfig) tlsConfig() (*tls.Config, error) {
	if c.securityProtocol == "PLAINTEXT" {
		return nil, nil
	}
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return nil, err
		}
		config.RootCAs = x509.NewCertPool()
		if !config.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", c.caFile)
		}
	}
	if c.certFile != "" {
		cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
		if err != nil {
			return nil, err
		}
		config.Certificates = []tls.Certificate{cert}
	}
	return config, nil
}

// mechanism is the SASL mechanism for SASL_SSL; nil otherwise.
func (c kafkaConfig) mechanism() sasl.Mechanism {
	if c.securityProtocol != "SASL_SSL" {
		return nil
	}
	return scram.Auth{User: c.saslUsername, Pass: c.saslPassword}.AsSha512Mechanism()
}

// options configure a client like the Python consumer (grpc_server/consumer.py): every partition, no
// consumer group, from the earliest offset, so the latest prediction per key is rebuilt at start.
func (c kafkaConfig) options(hooks ...kgo.Hook) ([]kgo.Opt, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.brokers...),
		kgo.ClientID("cryptopredict-stream-edge"),
		kgo.ConsumeTopics(c.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// A fetch returns as soon as one byte is there (the broker answers a long poll when a record
		// lands), so a prediction waits for no batch; an idle one returns every fetchMaxWait, which
		// shows Kafka is still there.
		kgo.FetchMinBytes(1),
		kgo.FetchMaxWait(fetchMaxWait),
		// Transaction markers take offsets too: kept (and skipped), they count towards catching up.
		kgo.KeepControlRecords(),
		// Dead letters uncompressed: franz-go's default, snappy, is a codec the Python clients lack.
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		// A letter fails after deadLetterTimeout instead of being retried for ever; without idempotence
		// the timeout also fails letters already sent (a duplicate is harmless: the store keeps one letter
		// per DeadLetter.store_key), and no producer id is needed.
		kgo.RecordDeliveryTimeout(deadLetterTimeout),
		kgo.DisableIdempotentWrite(),
		kgo.WithHooks(hooks...),
	}
	config, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	if config != nil {
		opts = append(opts, kgo.DialTLSConfig(config))
	}
	if m := c.mechanism(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// deadLetter is cryptopredict.models.market.DeadLetter. Its time is the record's and its reason names
// the record's place, so that every edge, and every restart reading the topic again, writes the same
// letter, which the store keeps once (DeadLetter.store_key).
type deadLetter struct {
	Source string `json:"source"`
	Reason string `json:"reason"`
	Raw    string `json:"raw"`
	At     string `json:"at"`
}

func newDeadLetter(r *kgo.Record, problem error) deadLetter {
	return deadLetter{
		Source: deadLetterSource,
		Reason: fmt.Sprintf("invalid prediction: %v (topic %s, partition %d, offset %d)", problem, r.Topic, r.Partition, r.Offset),
		Raw:    decodeReplacing(r.Value),
		At:     r.Timestamp.UTC().Format("2006-01-02T15:04:05.000000Z"),
	}
}

// decodeReplacing is Python's b.decode("utf-8", "replace"), which the Python stages write a letter's raw
// record with: each maximal subpart of an ill-formed sequence becomes one U+FFFD (Unicode's recommended
// practice). That is a truncated sequence's valid start as a whole (b"\xe2\x82" is one), and any other
// bad byte alone (b"\xff\xfe", an overlong b"\xc0\xaf" and a surrogate b"\xed\xa0\x80" are one a byte).
func decodeReplacing(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var out strings.Builder
	out.Grow(len(b) + 8)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r != utf8.RuneError || size > 1 { // a rune, or U+FFFD written out in the input
			out.Write(b[:size])
			b = b[size:]
			continue
		}
		out.WriteRune(utf8.RuneError)
		b = b[validPrefix(b):]
	}
	return out.String()
}

// validPrefix is the length of the maximal subpart at the start of b, an ill-formed sequence: the lead
// byte with the continuation bytes that could still have made a character (at least 1).
func validPrefix(b []byte) int {
	var need int
	lo, hi := byte(0x80), byte(0xBF) // the range of the second byte; the others are 80-BF
	switch c := b[0]; {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0 // no overlong form
	case c == 0xED:
		need, hi = 2, 0x9F // no surrogate
	case c >= 0xE1 && c <= 0xEF:
		need = 2
	case c == 0xF0:
		need, lo = 3, 0x90 // no overlong form
	case c == 0xF4:
		need, hi = 3, 0x8F // nothing above U+10FFFF
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	default: // a continuation byte, C0, C1 or F5-FF: never the start of a character
		return 1
	}
	n := 1
	for ; n <= need && n < len(b); n++ {
		if b[n] < lo || b[n] > hi {
			break
		}
		lo, hi = 0x80, 0xBF
	}
	return n
}

// consumer feeds the hub from the predictions topic.
type consumer struct {
	config  kafkaConfig
	client  *kgo.Client
	hub     *hub
	started time.Time
	errors  *logLimiter // Kafka's errors, per partition

	caughtUp atomic.Bool
	// Unix ns of the last fetch a broker answered, of the last partition a fetch brought records of
	// without error, and of the last partition error a fetch brought (connected).
	lastFetch          atomic.Int64
	lastPartitionRead  atomic.Int64
	lastPartitionError atomic.Int64

	consumed         atomic.Int64 // valid predictions read
	invalid          atomic.Int64 // records refused
	kafkaErrors      atomic.Int64 // failed connections, failed fetches and partition errors
	deadLetterErrors atomic.Int64 // dead letters Kafka did not take
	delay            *histogram   // made_at -> fan-out, once caught up

	deadLetterTopicMu  sync.Mutex // one purge of the dead-letter topic at a time
	deadLetterPurgedAt time.Time
}

func newConsumer(config kafkaConfig, h *hub, extra ...kgo.Opt) (*consumer, error) {
	c := &consumer{config: config, hub: h, started: time.Now(), delay: newHistogram(latencyBuckets), errors: newLogLimiter(errorLogEvery)}
	opts, err := config.options(c)
	if err != nil {
		return nil, err
	}
	if c.client, err = kgo.NewClient(append(opts, extra...)...); err != nil {
		return nil, err
	}
	return c, nil
}

// OnBrokerConnect counts a broker that could not be reached (kgo.HookBrokerConnect).
func (c *consumer) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		c.kafkaErrors.Add(1)
	}
}

// OnBrokerE2E tells answered fetches from failed ones (kgo.HookBrokerE2E).
func (c *consumer) OnBrokerE2E(_ kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	if key != (*kmsg.FetchRequest)(nil).Key() {
		return
	}
	if e2e.Err() != nil {
		c.kafkaErrors.Add(1)
		return
	}
	c.lastFetch.Store(time.Now().UnixNano())
}

// connected: a broker answered a fetch lately (fetches never stop while Kafka is there: an idle one
// returns after fetchMaxWait), and the fetches of the last few seconds brought not only partition
// errors (a topic deleted, access refused). An idle answer holds no partition (the client polls only
// records and errors), so it counts as long as no partition error came after the last partition read.
func (c *consumer) connected() bool {
	now := time.Now()
	recent := func(unixNano int64) bool { return now.Sub(time.Unix(0, unixNano)) < connectedWithin }
	failed := c.lastPartitionError.Load()
	failing := recent(failed) && failed > c.lastPartitionRead.Load()
	return recent(c.lastFetch.Load()) && !failing
}

// span is the offsets a partition holds: from start (its log start offset) to before end (its high
// watermark).
type span struct{ start, end int64 }

// offsets is the span of each partition of the topic; none when the topic does not exist (yet).
func (c *consumer) offsets(ctx context.Context) (map[int32]span, error) {
	metadata := kmsg.NewPtrMetadataRequest()
	topic := kmsg.NewMetadataRequestTopic()
	topic.Topic = kmsg.StringPtr(c.config.topic)
	metadata.Topics = append(metadata.Topics, topic)
	response, err := metadata.RequestWith(ctx, c.client)
	if err != nil {
		return nil, err
	}
	if len(response.Topics) != 1 {
		return nil, fmt.Errorf("metadata of %s: %d topics", c.config.topic, len(response.Topics))
	}
	if err := kerr.ErrorForCode(response.Topics[0].ErrorCode); err != nil {
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			return map[int32]span{}, nil
		}
		return nil, fmt.Errorf("metadata of %s: %w", c.config.topic, err)
	}
	var partitions []int32
	for _, p := range response.Topics[0].Partitions {
		partitions = append(partitions, p.Partition)
	}
	earliest, err := c.listOffsets(ctx, partitions, -2)
	if err != nil {
		return nil, err
	}
	latest, err := c.listOffsets(ctx, partitions, -1)
	if err != nil {
		return nil, err
	}
	spans := map[int32]span{}
	for _, p := range partitions {
		spans[p] = span{earliest[p], latest[p]}
	}
	return spans, nil
}

// listOffsets asks the partitions' leaders for their earliest (-2) or latest (-1) offsets.
func (c *consumer) listOffsets(ctx context.Context, partitions []int32, timestamp int64) (map[int32]int64, error) {
	request := kmsg.NewPtrListOffsetsRequest()
	topic := kmsg.NewListOffsetsRequestTopic()
	topic.Topic = c.config.topic
	for _, p := range partitions {
		partition := kmsg.NewListOffsetsRequestTopicPartition()
		partition.Partition = p
		partition.Timestamp = timestamp
		topic.Partitions = append(topic.Partitions, partition)
	}
	request.Topics = append(request.Topics, topic)
	response, err := request.RequestWith(ctx, c.client)
	if err != nil {
		return nil, err
	}
	offsets := map[int32]int64{}
	for _, t := range response.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return nil, fmt.Errorf("offsets of %s[%d]: %w", t.Topic, p.Partition, err)
			}
			offsets[p.Partition] = p.Offset
		}
	}
	if len(offsets) != len(partitions) {
		return nil, fmt.Errorf("offsets of %d of the %d partitions of %s", len(offsets), len(partitions), c.config.topic)
	}
	return offsets, nil
}

// catchUp tracks how far each partition has been read against where it ended at start.
type catchUp struct {
	pending map[int32]int64 // partition -> its end offset at start (or lower, see holds), until read that far
	next    map[int32]int64 // partition -> the offset after the last record read
}

// newCatchUp waits for every partition that holds records at start to be read to its end.
func newCatchUp(spans map[int32]span) catchUp {
	c := catchUp{pending: map[int32]int64{}, next: map[int32]int64{}}
	for p, s := range spans {
		if s.end > s.start {
			c.pending[p] = s.end
		}
	}
	return c
}

// read notes that the record at offset of partition was read; true once every partition is read as
// far as it went at start.
func (c *catchUp) read(partition int32, offset int64) bool {
	c.next[partition] = offset + 1
	return c.settle(partition)
}

// holds notes the span a partition holds now, from a fetch (log start offset and high watermark) or
// offsets listed again: a partition that ends before its end at start (truncated, or deleted and
// created again) needs reading only to its end now, and one whose records before that end were all
// deleted needs no more reading. So a partition that will never reach its end at start does not keep
// the edge from serving for ever. true once every partition is read as far as it must be.
func (c *catchUp) holds(partition int32, s span) bool {
	end, ok := c.pending[partition]
	if !ok {
		return c.done()
	}
	if s.end >= 0 && s.end < end {
		end = s.end
		c.pending[partition] = end
	}
	if s.start >= end {
		delete(c.pending, partition)
	}
	return c.settle(partition)
}

// relisted takes the spans listed again: a partition no longer listed (the topic is gone, or has fewer
// partitions now) needs no more reading.
func (c *catchUp) relisted(spans map[int32]span) bool {
	for p := range c.pending {
		if s, ok := spans[p]; ok {
			c.holds(p, s)
		} else {
			delete(c.pending, p)
		}
	}
	return c.done()
}

// restart forgets how far each partition was read: the topic was taken up again from its start.
func (c *catchUp) restart() { clear(c.next) }

func (c *catchUp) settle(partition int32) bool {
	if end, ok := c.pending[partition]; ok && c.next[partition] >= end {
		delete(c.pending, partition)
	}
	return c.done()
}

func (c *catchUp) done() bool { return len(c.pending) == 0 }

// run consumes until ctx ends. It first learns how far the topic goes, retrying while Kafka cannot
// say; once every partition is read that far it is caught up, and onCaughtUp is called.
func (c *consumer) run(ctx context.Context, onCaughtUp func()) {
	var progress catchUp
	for delay := time.Second; progress.pending == nil; delay = min(2*delay, 10*time.Second) {
		request, cancel := context.WithTimeout(ctx, 30*time.Second)
		spans, err := c.offsets(request)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			if len(spans) == 0 {
				log.Printf("topic %s does not exist yet: nothing to catch up with", c.config.topic)
			}
			progress = newCatchUp(spans)
			break
		}
		log.Printf("offsets of %s not known yet (%v); retrying in %s", c.config.topic, err, delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return
		}
	}
	log.Printf("consuming %s from %s: catching up with %d partitions", c.config.topic, strings.Join(c.config.brokers, ","), len(progress.pending))
	caughtUp := func() {
		c.caughtUp.Store(true)
		log.Printf("caught up with %s: %d predictions (%d refused) in %s", c.config.topic,
			c.consumed.Load(), c.invalid.Load(), time.Since(c.started).Round(time.Millisecond))
		onCaughtUp()
	}
	if progress.done() {
		caughtUp()
	}
	relisted := time.Now()
	for {
		poll, cancel := ctx, context.CancelFunc(func() {})
		if !c.caughtUp.Load() { // come back to list the offsets again, even if nothing is fetched
			poll, cancel = context.WithTimeout(ctx, relistEvery)
		}
		fetches := c.client.PollFetches(poll)
		cancel()
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		if c.take(fetches, &progress) {
			c.rejoin()
			progress.restart()
		}
		if c.caughtUp.Load() {
			continue
		}
		if !progress.done() && time.Since(relisted) >= relistEvery {
			relisted = time.Now()
			request, cancel := context.WithTimeout(ctx, 10*time.Second)
			spans, err := c.offsets(request)
			cancel()
			if err == nil {
				progress.relisted(spans)
			} else if ctx.Err() == nil {
				log.Printf("offsets of %s not listed again: %v", c.config.topic, err)
			}
		}
		if progress.done() {
			caughtUp()
		}
	}
}

// take handles what a poll brought: records, the spans of the partitions they came from, and
// partition errors. true when the topic was deleted (and maybe created again): Kafka then answers
// UNKNOWN_TOPIC_ID for the topic id the client holds, which it never replaces by itself.
func (c *consumer) take(fetches kgo.Fetches, progress *catchUp) (recreated bool) {
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if p.Err != nil {
			if p.Topic == "" && errors.Is(p.Err, context.DeadlineExceeded) {
				return // the poll's own time limit while catching up
			}
			c.kafkaErrors.Add(1)
			c.lastPartitionError.Store(time.Now().UnixNano())
			c.errors.printf(fmt.Sprintf("%s[%d] %v", p.Topic, p.Partition, p.Err), "fetching %s[%d]: %v", p.Topic, p.Partition, p.Err)
			if p.Topic == c.config.topic && errors.Is(p.Err, kerr.UnknownTopicID) {
				recreated = true
			}
		}
		for _, r := range p.Records {
			if !r.Attrs.IsControl() {
				c.handle(r)
			}
			progress.read(r.Partition, r.Offset)
		}
		if p.Err == nil {
			c.lastPartitionRead.Store(time.Now().UnixNano())
			progress.holds(p.Partition, span{p.LogStartOffset, p.HighWatermark})
		}
	})
	return recreated
}

// rejoin takes the topic up again from its start, as franz-go asks (it keeps a topic's first id): the
// hub drops what it reads again (nothing newer than what it holds), and streams stay open.
func (c *consumer) rejoin() {
	log.Printf("topic %s was deleted (UNKNOWN_TOPIC_ID): reading it again from its start, once it exists again", c.config.topic)
	c.client.PurgeTopicsFromClient(c.config.topic)
	c.client.AddConsumeTopics(c.config.topic)
}

// handle publishes a record's prediction, or refuses the record: a log line naming its place, a dead
// letter and a count. Nothing else stops.
func (c *consumer) handle(r *kgo.Record) {
	p, err := decodePrediction(r.Value)
	if err != nil {
		c.invalid.Add(1)
		log.Printf("invalid prediction at topic %s partition %d offset %d: %v", r.Topic, r.Partition, r.Offset, err)
		c.sendDeadLetter(r, err)
		return
	}
	c.consumed.Add(1)
	if c.hub.publish(p) && c.caughtUp.Load() {
		c.delay.observe(time.Since(time.UnixMicro(p.madeAt)).Seconds())
	}
}

// sendDeadLetter hands the letter to the client without waiting: a full buffer fails it at once, and
// Kafka has deadLetterTimeout to take it; either way it is counted and logged, and reading goes on.
func (c *consumer) sendDeadLetter(r *kgo.Record, problem error) {
	value, err := json.Marshal(newDeadLetter(r, problem))
	if err != nil { // strings and a time: cannot happen
		panic(err)
	}
	c.produceDeadLetter(&kgo.Record{Topic: c.config.deadLetterTopic, Value: value}, r, true)
}

func (c *consumer) produceDeadLetter(letter, r *kgo.Record, again bool) {
	c.client.TryProduce(context.Background(), letter, func(_ *kgo.Record, err error) {
		if err == nil {
			return
		}
		if again && errors.Is(err, kerr.UnknownTopicID) {
			// The dead-letter topic was deleted (and maybe created again): the client fails every
			// letter for it until it is purged. Not from the promise, which must not block.
			go c.deadLetterTopicGone(letter, r)
			return
		}
		c.deadLetterErrors.Add(1)
		c.errors.printf("dead letter "+err.Error(), "dead letter for %s[%d]@%d not written to %s: %v", r.Topic, r.Partition, r.Offset, c.config.deadLetterTopic, err)
	})
}

// deadLetterTopicGone purges the dead-letter topic from the client, so that letters find the topic as
// it is now, and sends letter once more.
func (c *consumer) deadLetterTopicGone(letter, r *kgo.Record) {
	c.deadLetterTopicMu.Lock()
	if time.Since(c.deadLetterPurgedAt) > 5*time.Second { // letters that failed together: one purge
		log.Printf("topic %s was deleted (UNKNOWN_TOPIC_ID): writing dead letters to it as it is now", c.config.deadLetterTopic)
		c.client.PurgeTopicsFromProducing(c.config.deadLetterTopic)
		c.deadLetterPurgedAt = time.Now()
	}
	c.deadLetterTopicMu.Unlock()
	c.produceDeadLetter(&kgo.Record{Topic: letter.Topic, Value: letter.Value}, r, false)
}

// close sends the dead letters still buffered (a few seconds at most), then disconnects.
func (c *consumer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.client.Flush(ctx); err != nil {
		log.Printf("dead letters not flushed: %v", err)
	}
	c.client.Close()
}
