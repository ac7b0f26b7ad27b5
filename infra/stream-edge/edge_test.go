package main

import (
	"bytes"
	"fmt"
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// record is the JSON of a Prediction as the prediction agent writes it, of pair on exchange ("": the
// field left out, which means Kraken), for the candle `minute` minutes after t0, made madeAfter later.
func record(exchange, pair string, minute int, madeAfter time.Duration) []byte {
	feature := t0.Add(time.Duration(minute) * time.Minute)
	at := func(t time.Time) string { return t.Format("2006-01-02T15:04:05.000000Z") }
	r := fmt.Sprintf(`{"pair":%q,"interval_s":60,"horizon_s":60,"made_at":%q,"feature_time":%q,`+
		`"target_time":%q,"last_price":100.0,"predicted_price":101.5,"model_name":"m","model_version":"1"`,
		pair, at(feature.Add(madeAfter)), at(feature), at(feature.Add(time.Minute)))
	if exchange != "" {
		r += fmt.Sprintf(`,"exchange":%q`, exchange)
	}
	return []byte(r + "}")
}

// encoded is the prediction of a Kraken record without an exchange (as written before exchanges).
func encoded(pair string, minute int, madeAfter time.Duration) prediction {
	return encodedOn("", pair, minute, madeAfter)
}

func encodedOn(exchange, pair string, minute int, madeAfter time.Duration) prediction {
	p, err := decodePrediction(record(exchange, pair, minute, madeAfter))
	if err != nil {
		panic(err)
	}
	return p
}

// response is what a subscriber reads in a StreamPredictionsResponse: the key and the times.
type response struct {
	key         key
	featureTime time.Time
	madeAt      time.Time
}

func readTimestamp(b []byte) (time.Time, error) {
	var seconds, nanos int64
	err := fields(b, func(num protowire.Number, typ protowire.Type, _ []byte, varint uint64) error {
		switch {
		case num == timestampSeconds && typ == protowire.VarintType:
			seconds = int64(varint)
		case num == timestampNanos && typ == protowire.VarintType:
			nanos = int64(varint)
		}
		return nil
	})
	return time.Unix(seconds, nanos).UTC(), err
}

func readResponse(wire []byte) (response, error) {
	var r response
	var body []byte
	err := fields(wire, func(num protowire.Number, typ protowire.Type, value []byte, _ uint64) error {
		if num == responsePrediction && typ == protowire.BytesType {
			body = value
		}
		return nil
	})
	if err != nil || body == nil {
		return r, fmt.Errorf("no prediction in %x (%v)", wire, err)
	}
	err = fields(body, func(num protowire.Number, typ protowire.Type, value []byte, varint uint64) error {
		var err error
		switch {
		case num == predictionPair && typ == protowire.BytesType:
			r.key.pair = string(value)
		case num == predictionInterval && typ == protowire.VarintType:
			r.key.interval = int64(varint)
		case num == predictionHorizon && typ == protowire.VarintType:
			r.key.horizon = int64(varint)
		case num == predictionMadeAt && typ == protowire.BytesType:
			r.madeAt, err = readTimestamp(value)
		case num == predictionFeatureTime && typ == protowire.BytesType:
			r.featureTime, err = readTimestamp(value)
		case num == predictionExchange && typ == protowire.BytesType:
			r.key.exchange = string(value)
		}
		return err
	})
	return r, err
}

func drain(s *subscriber) []string {
	var got []string
	for {
		select {
		case wire, ok := <-s.queue:
			if !ok {
				return append(got, "closed")
			}
			r, err := readResponse(wire)
			if err != nil {
				panic(err)
			}
			market := r.key.pair // as the server's market keys name it: the pair alone on Kraken
			if r.key.exchange != defaultExchange {
				market = r.key.exchange + ":" + market
			}
			got = append(got, market+"@"+r.featureTime.Format("15:04"))
		default:
			return got
		}
	}
}

func equal(t *testing.T, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestARecordsPredictionHasItsKeyTimesAndTheServersEncoding(t *testing.T) {
	p := encoded("BTC/USD", 3, 1500*time.Millisecond)
	if p.key != (key{"kraken", "BTC/USD", 60, 60}) { // no exchange: Kraken
		t.Fatalf("key %v", p.key)
	}
	for _, exchange := range []string{"kraken", "coinbase"} {
		if k := encodedOn(exchange, "BTC/USD", 3, 0).key; k != (key{exchange, "BTC/USD", 60, 60}) {
			t.Fatalf("key %v of a prediction on %s", k, exchange)
		}
	}
	feature := t0.Add(3 * time.Minute)
	if p.featureTime != feature.UnixMicro() || p.madeAt != feature.Add(1500*time.Millisecond).UnixMicro() {
		t.Fatalf("times %d %d", p.featureTime, p.madeAt)
	}
	r, err := readResponse(p.wire)
	if err != nil || r.key != p.key || !r.featureTime.Equal(feature) || !r.madeAt.Equal(feature.Add(1500*time.Millisecond)) {
		t.Fatalf("response %+v, %v", r, err)
	}
}

func TestParseRequests(t *testing.T) {
	b := protowire.AppendTag(nil, requestPairs, protowire.BytesType)
	b = protowire.AppendString(b, "BTC/USD")
	b = protowire.AppendTag(b, requestPairs, protowire.BytesType)
	b = protowire.AppendString(b, "ETH/USD")
	b = protowire.AppendTag(b, requestInterval, protowire.VarintType)
	b = protowire.AppendVarint(b, 60)
	f, err := parseRequest(b)
	if err != nil || len(f.pairs) != 2 || f.interval != 60 || f.horizon != 0 || f.exchange != "kraken" {
		t.Fatalf("filter %+v, %v", f, err)
	}
	if !f.wants(key{"kraken", "ETH/USD", 60, 300}) || f.wants(key{"kraken", "ETH/USD", 300, 60}) ||
		f.wants(key{"kraken", "XRP/USD", 60, 60}) {
		t.Fatal("filter wants the wrong keys")
	}
	if f.wants(key{"coinbase", "ETH/USD", 60, 300}) {
		t.Fatal("a request without an exchange wants another exchange than Kraken")
	}
	if _, exact := parseLatestRequest(b); exact { // no horizon: the server's "newest of any"
		t.Fatal("a zero horizon is not an exact key")
	}
	b = protowire.AppendTag(b, requestHorizon, protowire.VarintType)
	b = protowire.AppendVarint(b, 60)
	eth := key{"kraken", "ETH/USD", 60, 60}
	if l, exact := parseLatestRequest(b); !exact || l != (lookup{eth, ""}) {
		t.Fatalf("latest request %v %v", l, exact) // a repeated field read as singular: the last wins
	}
	withTarget := protowire.AppendTag(append([]byte(nil), b...), latestTarget, protowire.BytesType)
	withTarget = protowire.AppendString(withTarget, "price")
	if l, exact := parseLatestRequest(withTarget); !exact || l != (lookup{eth, "price"}) {
		t.Fatalf("latest request with a target %v %v", l, exact)
	}
	// quantile_levels (4), packed or not, and any field the edge does not know: the server answers.
	packed := protowire.AppendTag(append([]byte(nil), b...), 4, protowire.BytesType)
	packed = protowire.AppendBytes(packed, protowire.AppendFixed64(nil, math.Float64bits(0.1)))
	unpacked := protowire.AppendTag(append([]byte(nil), b...), 4, protowire.Fixed64Type)
	unpacked = protowire.AppendFixed64(unpacked, math.Float64bits(0.9))
	unknown := protowire.AppendTag(append([]byte(nil), b...), 99, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 1)
	for _, request := range [][]byte{packed, unpacked, unknown} {
		if _, exact := parseLatestRequest(request); exact {
			t.Fatalf("a lookup with a field the edge does not read is answered by the edge: %x", request)
		}
	}
}

func TestSubscriberGetsTheLatestOfEachKeyOldestFirstThenNewerOnes(t *testing.T) {
	h := newHub(16)
	h.publish(encoded("BTC/USD", 1, time.Second))
	h.publish(encoded("ETH/USD", 0, time.Second))
	h.publish(encoded("XRP/USD", 2, time.Second))
	s := h.subscribe(filter{exchange: defaultExchange, pairs: map[string]bool{"BTC/USD": true, "ETH/USD": true}})
	equal(t, drain(s), "ETH/USD@12:00", "BTC/USD@12:01")
	if h.publish(encoded("BTC/USD", 1, time.Second)) { // a repeat
		t.Fatal("a prediction no newer than the latest was published")
	}
	if !h.publish(encoded("BTC/USD", 1, 2*time.Second)) { // same candle, newer forecast
		t.Fatal("a newer forecast of the same candle was refused")
	}
	h.publish(encoded("XRP/USD", 3, time.Second))
	h.publish(encoded("BTC/USD", 2, time.Second))
	equal(t, drain(s), "BTC/USD@12:01", "BTC/USD@12:02")
	h.end(s)
	h.publish(encoded("BTC/USD", 3, time.Second))
	equal(t, drain(s), "closed")
	h.end(s) // the stream's own end after the client's: once is enough
	h.close()
}

func TestAFullQueueDropsItsOldestAndCountsThem(t *testing.T) {
	h := newHub(4)
	s := h.subscribe(filter{exchange: anyExchange})
	for minute := 0; minute < 10; minute++ {
		h.publish(encoded("BTC/USD", minute, time.Second))
	}
	equal(t, drain(s), "BTC/USD@12:06", "BTC/USD@12:07", "BTC/USD@12:08", "BTC/USD@12:09")
	if s.dropped.Load() != 6 || h.dropped.Load() != 6 {
		t.Fatalf("dropped %d (hub %d)", s.dropped.Load(), h.dropped.Load())
	}
}

func TestCloseEndsStreamsAfterWhatIsQueued(t *testing.T) {
	h := newHub(4)
	s := h.subscribe(filter{exchange: anyExchange})
	h.publish(encoded("BTC/USD", 0, time.Second))
	h.close()
	if h.publish(encoded("BTC/USD", 1, time.Second)) {
		t.Fatal("published after close")
	}
	equal(t, drain(s), "BTC/USD@12:00", "closed")
	equal(t, drain(h.subscribe(filter{exchange: anyExchange})), "BTC/USD@12:00", "closed") // late: the snapshot, then the end
	h.endStreams()                                                                         // the server goes too as the edge shuts down: no stream is ended twice
}

func TestEndStreamsEndsThemAndKeepsThePredictions(t *testing.T) {
	h := newHub(4)
	s := h.subscribe(filter{exchange: anyExchange})
	h.publish(encoded("BTC/USD", 5, time.Second))
	h.endStreams() // the server went away
	equal(t, drain(s), "BTC/USD@12:05", "closed")
	if h.publish(encoded("BTC/USD", 5, time.Second)) {
		t.Fatal("a prediction read again (Kafka came back) was published twice")
	}
	// The predictions come from Kafka: a stream admitted by the server that comes back gets them.
	next := h.subscribe(filter{exchange: anyExchange})
	if !h.publish(encoded("BTC/USD", 6, time.Second)) {
		t.Fatal("a newer prediction was refused")
	}
	equal(t, drain(next), "BTC/USD@12:05", "BTC/USD@12:06")
	if wire, ok := h.latestOf(key{"kraken", "BTC/USD", 60, 60}); !ok || !bytes.Equal(wire, encoded("BTC/USD", 6, time.Second).wire) {
		t.Fatal("the latest prediction was lost with the streams")
	}
}

func TestVouchedNeedsLookupAndCredentialOfTheCurrentGeneration(t *testing.T) {
	v := newVouched()
	btc := lookup{key{"kraken", "BTC/USD", 60, 60}, ""}
	g := v.current()
	v.addLookup(g, btc)
	if v.answers("Bearer a", btc) {
		t.Fatal("answered for a caller the upstream never accepted")
	}
	v.addCredential(g, "Bearer a")
	if !v.answers("Bearer a", btc) || v.answers("Bearer b", btc) || v.answers("Bearer a", lookup{key{"kraken", "ETH/USD", 60, 60}, ""}) {
		t.Fatal("answers for the wrong caller or key")
	}
	if v.answers("Bearer a", lookup{btc.key, "volatility"}) {
		t.Fatal("answers for a target the upstream never vouched for")
	}
	if v.answers("Bearer a", lookup{key{"coinbase", "BTC/USD", 60, 60}, ""}) {
		t.Fatal("answers for the pair on an exchange the upstream never vouched for")
	}
	v.reset()
	if v.answers("Bearer a", btc) {
		t.Fatal("answered after the upstream went away")
	}
	v.addLookup(g, btc) // answers to calls made before the reset do not count
	v.addCredential(g, "Bearer a")
	if v.answers("Bearer a", btc) {
		t.Fatal("an answer of the previous upstream was recorded")
	}
	for i := 0; i < 2*maxCredentials; i++ {
		v.addCredential(v.current(), string(rune(i)))
	}
	if len(v.credentials) != maxCredentials {
		t.Fatalf("%d credentials remembered", len(v.credentials))
	}
}

func TestCallersAreBoundedAndExemptHostsCountedOnly(t *testing.T) {
	c := newCallers(2, []string{"::1"})
	if !c.take("a", false) || !c.take("a", false) || c.take("a", false) {
		t.Fatal("want two streams of a, then a refusal")
	}
	if !c.take("b", false) || !c.take("a", true) {
		t.Fatal("another caller, and an exempt one, are not refused")
	}
	c.release("a")
	c.release("a")
	if !c.take("a", false) || c.open["a"] != 2 {
		t.Fatalf("a release frees a slot: %v", c.open)
	}
	c.release("a")
	c.release("a")
	c.release("b")
	if len(c.open) != 0 {
		t.Fatalf("every slot released: %v", c.open)
	}
	if u := newCallers(0, nil); !u.take("a", false) || !u.take("a", false) {
		t.Fatal("a limit of 0 bounds nobody")
	}
}

func request(exchange string, pairs ...string) []byte {
	var b []byte
	for _, pair := range pairs {
		b = protowire.AppendTag(b, requestPairs, protowire.BytesType)
		b = protowire.AppendString(b, pair)
	}
	if exchange != "" {
		b = protowire.AppendTag(b, requestExchange, protowire.BytesType)
		b = protowire.AppendString(b, exchange)
	}
	return b
}

func mustFilter(t *testing.T, b []byte) filter {
	t.Helper()
	f, err := parseRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestRequestsAndLookupsAreByExchangeAndNoneMeansKraken(t *testing.T) {
	for _, c := range []struct {
		request []byte
		want    string
	}{
		{request("", "BTC/USD"), "kraken"},
		{request("kraken", "BTC/USD"), "kraken"},
		{request("coinbase", "BTC/USD"), "coinbase"},
		{request("*"), "*"},
	} {
		if f := mustFilter(t, c.request); f.exchange != c.want {
			t.Fatalf("request %x: exchange %q, want %q", c.request, f.exchange, c.want)
		}
	}
	coinbase := mustFilter(t, request("coinbase", "BTC/USD"))
	if !coinbase.wants(key{"coinbase", "BTC/USD", 60, 60}) || coinbase.wants(key{"kraken", "BTC/USD", 60, 60}) {
		t.Fatal("a Coinbase filter wants the wrong exchange")
	}
	every := mustFilter(t, request("*", "BTC/USD"))
	if !every.wants(key{"coinbase", "BTC/USD", 60, 60}) || !every.wants(key{"kraken", "BTC/USD", 60, 60}) ||
		every.wants(key{"kraken", "ETH/USD", 60, 60}) {
		t.Fatal("an every-exchange filter wants the wrong keys")
	}
	exact := func(exchange string) []byte {
		b := protowire.AppendTag(nil, requestPairs, protowire.BytesType)
		b = protowire.AppendString(b, "BTC/USD")
		b = protowire.AppendTag(b, requestInterval, protowire.VarintType)
		b = protowire.AppendVarint(b, 60)
		b = protowire.AppendTag(b, requestHorizon, protowire.VarintType)
		b = protowire.AppendVarint(b, 60)
		if exchange != "" {
			b = protowire.AppendTag(b, latestExchange, protowire.BytesType)
			b = protowire.AppendString(b, exchange)
		}
		return b
	}
	for exchange, want := range map[string]string{"": "kraken", "kraken": "kraken", "coinbase": "coinbase"} {
		l, ok := parseLatestRequest(exact(exchange))
		if !ok || l != (lookup{key{want, "BTC/USD", 60, 60}, ""}) {
			t.Fatalf("lookup on %q: %v %v", exchange, l, ok)
		}
	}
}

func TestTheSamePairOnTwoExchangesIsTwoKeys(t *testing.T) {
	h := newHub(16)
	kraken := h.subscribe(mustFilter(t, request("", "BTC/USD")))
	coinbase := h.subscribe(mustFilter(t, request("coinbase", "BTC/USD")))
	every := h.subscribe(mustFilter(t, request("*")))
	if !h.publish(encodedOn("kraken", "BTC/USD", 2, time.Second)) ||
		!h.publish(encodedOn("coinbase", "BTC/USD", 1, time.Second)) { // older, but its own key
		t.Fatal("a prediction of the pair on another exchange was refused")
	}
	h.publish(encoded("BTC/USD", 3, time.Second)) // no exchange: Kraken's
	equal(t, drain(kraken), "BTC/USD@12:02", "BTC/USD@12:03")
	equal(t, drain(coinbase), "coinbase:BTC/USD@12:01")
	equal(t, drain(every), "BTC/USD@12:02", "coinbase:BTC/USD@12:01", "BTC/USD@12:03")
	// The snapshot of a new subscriber, and lookups, are by exchange too.
	equal(t, drain(h.subscribe(mustFilter(t, request("coinbase")))), "coinbase:BTC/USD@12:01")
	wire, ok := h.latestOf(key{"coinbase", "BTC/USD", 60, 60})
	if r, err := readResponse(wire); !ok || err != nil || !r.featureTime.Equal(t0.Add(time.Minute)) {
		t.Fatal("the latest Coinbase prediction is not Coinbase's")
	}
	if _, ok := h.latestOf(key{"binance", "BTC/USD", 60, 60}); ok {
		t.Fatal("a prediction of an exchange never published")
	}
}
