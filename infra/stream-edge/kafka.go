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
	raw := string(r.Value)
	if !utf8.ValidString(raw) { // as Python's decode("utf-8", "replace")
		raw = strings.ToValidUTF8(raw, "\uFFFD")
	}
	return deadLetter{
		Source: deadLetterSource,
		Reason: fmt.Sprintf("invalid prediction: %v (topic %s, partition %d, offset %d)", problem, r.Topic, r.Partition, r.Offset),
		Raw:    raw,
		At:     r.Timestamp.UTC().Format("2006-01-02T15:04:05.000000Z"),
	}
}

// consumer feeds the hub from the predictions topic.
type consumer struct {
	config  kafkaConfig
	client  *kgo.Client
	hub     *hub
	started time.Time

	caughtUp  atomic.Bool
	lastFetch atomic.Int64 // unix ns of the last fetch a broker answered

	consumed         atomic.Int64 // valid predictions read
	invalid          atomic.Int64 // records refused
	kafkaErrors      atomic.Int64 // failed connections and fetches
	deadLetterErrors atomic.Int64 // dead letters Kafka did not take
	delay            *histogram   // made_at -> fan-out, once caught up
}

func newConsumer(config kafkaConfig, h *hub) (*consumer, error) {
	c := &consumer{config: config, hub: h, started: time.Now(), delay: newHistogram(latencyBuckets)}
	opts, err := config.options(c)
	if err != nil {
		return nil, err
	}
	if c.client, err = kgo.NewClient(opts...); err != nil {
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

// connected: a broker answered a fetch lately. Fetches never stop while Kafka is there: an idle one
// returns after fetchMaxWait.
func (c *consumer) connected() bool {
	return time.Since(time.Unix(0, c.lastFetch.Load())) < connectedWithin
}

// endOffsets is, per partition of the topic that holds records now, the offset after its last one:
// what the edge reads before it serves. A topic that does not exist yet holds nothing.
func (c *consumer) endOffsets(ctx context.Context) (map[int32]int64, error) {
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
			log.Printf("topic %s does not exist yet: nothing to catch up with", c.config.topic)
			return map[int32]int64{}, nil
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
	ends := map[int32]int64{}
	for _, p := range partitions {
		if latest[p] > earliest[p] {
			ends[p] = latest[p]
		}
	}
	return ends, nil
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
	pending map[int32]int64 // partition -> its end offset at start, until read that far
}

// read notes that the record at offset of partition was read; true once every partition is read as
// far as it went at start.
func (c *catchUp) read(partition int32, offset int64) bool {
	if end, ok := c.pending[partition]; ok && offset+1 >= end {
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
		ends, err := c.endOffsets(request)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			progress.pending = ends
			break
		}
		log.Printf("end offsets of %s not known yet (%v); retrying in %s", c.config.topic, err, delay)
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
	for {
		fetches := c.client.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			c.kafkaErrors.Add(1)
			log.Printf("fetching %s[%d]: %v", topic, partition, err)
		})
		wasCaughtUp := c.caughtUp.Load()
		fetches.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				c.handle(r)
			}
			progress.read(r.Partition, r.Offset)
		})
		if !wasCaughtUp && progress.done() {
			caughtUp()
		}
	}
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

func (c *consumer) sendDeadLetter(r *kgo.Record, problem error) {
	value, err := json.Marshal(newDeadLetter(r, problem))
	if err != nil { // strings and a time: cannot happen
		panic(err)
	}
	letter := &kgo.Record{Topic: c.config.deadLetterTopic, Value: value}
	c.client.Produce(context.Background(), letter, func(_ *kgo.Record, err error) {
		if err != nil {
			c.deadLetterErrors.Add(1)
			log.Printf("dead letter for %s[%d]@%d not written to %s: %v", r.Topic, r.Partition, r.Offset, c.config.deadLetterTopic, err)
		}
	})
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
