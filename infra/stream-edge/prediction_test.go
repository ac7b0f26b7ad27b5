package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// full is a record with every field of Prediction set, as the prediction agent writes it.
const full = `{"exchange":"coinbase","pair":"BTC/USD","interval_s":60,"horizon_s":300,` +
	`"made_at":"2024-05-01T12:01:00.250000Z","feature_time":"2024-05-01T12:00:00Z",` +
	`"target_time":"2024-05-01T12:06:00Z","last_price":100.5,"predicted_price":101.25,` +
	`"lower_price":99.0,"upper_price":103.5,"interval_level":0.8,` +
	`"quantiles":[{"level":0.1,"price":99.5},{"level":0.5,"price":101.25},{"level":0.9,"price":103.0}],` +
	`"predicted_volatility":0.0007,"volatility_regime":"mid","model_name":"cryptopredict-btcusd-60s-h5",` +
	`"model_version":"7"}`

// with is full with one field replaced by raw JSON, or left out when raw is "".
func with(field, raw string) string {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal([]byte(full), &doc); err != nil {
		panic(err)
	}
	if raw == "" {
		delete(doc, field)
	} else {
		doc[field] = json.RawMessage(raw)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestAFullRecordDecodesToEveryField(t *testing.T) {
	p, err := decodeRecord([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	made := time.Date(2024, 5, 1, 12, 1, 0, 250_000_000, time.UTC)
	if p.exchange != "coinbase" || p.pair != "BTC/USD" || p.interval != 60 || p.horizon != 300 ||
		!p.madeAt.Equal(made) || p.lastPrice != 100.5 || p.predictedPrice != 101.25 ||
		*p.lowerPrice != 99 || *p.upperPrice != 103.5 || *p.intervalLevel != 0.8 || len(p.quantiles) != 3 ||
		p.quantiles[2] != (quantile{0.9, 103}) || *p.predictedVolatility != 0.0007 || p.volatilityRegime != "mid" ||
		p.modelName != "cryptopredict-btcusd-60s-h5" || p.modelVersion != "7" {
		t.Fatalf("%+v", p)
	}
	// Without the optional fields: None, and Kraken.
	for _, field := range []string{"exchange", "lower_price", "upper_price", "interval_level", "quantiles", "predicted_volatility", "volatility_regime"} {
		p, err := decodeRecord([]byte(with(field, "")))
		if err != nil {
			t.Fatalf("without %s: %v", field, err)
		}
		if p.exchange != "kraken" && field == "exchange" {
			t.Fatalf("no exchange is %q", p.exchange)
		}
	}
	for _, field := range []string{"lower_price", "upper_price", "interval_level", "predicted_volatility", "volatility_regime"} {
		if _, err := decodeRecord([]byte(with(field, "null"))); err != nil {
			t.Fatalf("%s null: %v", field, err)
		}
	}
	if _, err := decodeRecord([]byte(with("predicted_volatility", "0"))); err != nil {
		t.Fatalf("a volatility of 0: %v", err)
	}
}

func TestRecordsThePythonServerRefusesAreRefused(t *testing.T) {
	for _, c := range []struct {
		record, want string
	}{
		{"", "empty record"},
		{"not json", "invalid JSON"},
		{"[]", "want an object"},
		{full + "x", "trailing characters"},
		{with("pair", ""), "pair: field required"},
		{with("made_at", ""), "made_at: field required"},
		{with("model_version", ""), "model_version: field required"},
		{with("pair", "5"), "pair: want a string"},
		{with("surprise", "1"), "surprise: extra field not permitted"},
		{with("exchange", `"ftx"`), "exchange"},
		{with("exchange", "null"), "exchange: want a string"},
		{with("interval_s", "0"), "interval_s: must be greater than 0"},
		{with("horizon_s", "-60"), "horizon_s: must be greater than 0"},
		{with("interval_s", "60.5"), "interval_s: want an integer"},
		{with("interval_s", "9223372036854775808"), "out of range"},
		{with("last_price", "0"), "last_price: must be greater than 0"},
		{with("predicted_price", "-1.5"), "predicted_price: must be greater than 0"},
		{with("predicted_price", `"101"`), "predicted_price: want a number"},
		{with("last_price", "1e999"), "out of range"},
		{with("lower_price", "0"), "lower_price: must be greater than 0"},
		{with("interval_level", "1"), "interval_level: must be less than 1"},
		{with("interval_level", "0"), "interval_level: must be greater than 0"},
		{with("predicted_volatility", "-0.1"), "predicted_volatility: must be at least 0"},
		{with("volatility_regime", `"stormy"`), "volatility_regime"},
		{with("quantiles", "null"), "quantiles: want an array"},
		{with("quantiles", `[{"level":0.5}]`), "quantiles.0.price: field required"},
		{with("quantiles", `[{"level":0.5,"price":1,"x":1}]`), "quantiles.0.x: extra field"},
		{with("quantiles", `[{"level":1.5,"price":1}]`), "quantiles.0.level: must be less than 1"},
		{with("quantiles", `[{"level":0.9,"price":1},{"level":0.1,"price":1}]`), "ascending"},
		{with("quantiles", `[{"level":0.5,"price":1},{"level":0.5,"price":1}]`), "distinct"},
		{with("quantiles", `[{"level":0.1,"price":2},{"level":0.9,"price":1}]`), "must not decrease"},
		{with("made_at", `"2024-05-01T12:00:00"`), "made_at"},                   // naive
		{with("made_at", `"2024-05-01"`), "made_at"},                            // a date
		{with("made_at", `1714564800`), "made_at: want an RFC 3339 time"},       // unix time: stricter
		{with("made_at", `"2024-02-30T12:00:00Z"`), "made_at"},                  // no such day
		{with("made_at", `"2024-05-01T24:00:00Z"`), "made_at"},                  // no such hour
		{with("made_at", `"2024-05-01T12:00:60Z"`), "made_at"},                  // a leap second
		{with("made_at", `"2024-05-01T12:00:00+24:00"`), "made_at"},             // no such offset
		{with("made_at", `"0001-01-01T00:30:00+01:00"`), "made_at"},             // before year 1 in UTC
		{with("made_at", `"9999-12-31T23:30:00-01:00"`), "made_at"},             // after 9999 in UTC
		{with("made_at", `"0000-01-01T00:00:00Z"`), "made_at"},                  // year 0
		{with("made_at", `"2024-05-01T12:00:00.1234567891Z"`), "made_at"},       // ten fraction digits: stricter
		{with("model_name", `"\ud800"`), "lone surrogate"},                      // pydantic: invalid JSON
		{with("model_name", `"\udc00\ud800"`), "lone surrogate"},                // a low one first
		{strings.Replace(full, `"mid"`, "\"\xff\"", 1), "invalid UTF-8"},        // pydantic: invalid JSON
		{strings.Replace(full, `"mid"`, "\"a\tb\"", 1), "control character"},    // raw tab in a string
		{strings.Replace(full, `100.5`, "NaN", 1), "unexpected character"},      // pydantic: not > 0
		{strings.Replace(full, `100.5`, "Infinity", 1), "unexpected character"}, // pydantic takes it: stricter
		{strings.TrimSuffix(full, "}") + `,"pair":"ETH/USD"}`, "duplicate key"}, // pydantic keeps the last: stricter
		{strings.Repeat("[", 100) + strings.Repeat("]", 100), "nested too deep"},
	} {
		_, err := decodeRecord([]byte(c.record))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.80q: error %v, want one with %q", c.record, err, c.want)
		}
	}
}

func TestTimesAreReadAsPythonReadsThem(t *testing.T) {
	for text, want := range map[string]time.Time{
		"2024-05-01T12:00:01Z":             time.Date(2024, 5, 1, 12, 0, 1, 0, time.UTC),
		"2024-05-01T12:00:01+01:00":        time.Date(2024, 5, 1, 11, 0, 1, 0, time.UTC),
		"2024-05-01T12:00:01-00:00":        time.Date(2024, 5, 1, 12, 0, 1, 0, time.UTC),
		"2024-05-01T12:00:01+23:59":        time.Date(2024, 4, 30, 12, 1, 1, 0, time.UTC),
		"2024-05-01T12:00:01.5Z":           time.Date(2024, 5, 1, 12, 0, 1, 500_000_000, time.UTC),
		"2024-05-01T12:00:01.123456789Z":   time.Date(2024, 5, 1, 12, 0, 1, 123_456_000, time.UTC), // cut to µs
		"2024-02-29T00:00:00Z":             time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC),
		"1969-12-31T23:59:59.999999Z":      time.Date(1969, 12, 31, 23, 59, 59, 999_999_000, time.UTC),
		"0001-01-01T00:00:00Z":             time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		"9999-12-31T23:59:59.999999+00:00": time.Date(9999, 12, 31, 23, 59, 59, 999_999_000, time.UTC),
	} {
		got, ok := parseTime(text)
		if !ok || !got.Equal(want) {
			t.Errorf("%s: %v %v, want %v", text, got, ok, want)
		}
	}
	for _, text := range []string{
		"2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-05-01 12:00:01Z", "2024-05-01T12:00Z",
		"2024-05-01T12:00:01z", "2024-05-01T12:00:01+0100", "2024-05-01T12:00:01,5Z", "2024-05-01T12:00:01.Z",
		"+024-05-01T12:00:01Z", "2024-05-01T12:00:01Z ",
	} {
		if _, ok := parseTime(text); ok {
			t.Errorf("%s was read", text)
		}
	}
}

func TestSurrogatePairsAndEscapesAreRead(t *testing.T) {
	p, err := decodeRecord([]byte(with("model_name", `"\ud83d\ude00 \u00e9\n\"\\\/"`)))
	if err != nil || p.modelName != "😀 é\n\"\\/" {
		t.Fatalf("%q %v", p.modelName, err)
	}
}

// corpusRecord is one line of the corpus tests/unit/test_edge_decoder.py writes: a record, what the
// Python server makes of it, and whether it came from the real Prediction model.
type corpusRecord struct {
	Name   string `json:"name"`
	Value  string `json:"value"`  // base64
	Python string `json:"python"` // the encoded StreamPredictionsResponse in hex, "" when refused
	Valid  bool   `json:"valid"`  // made by the real Prediction model
	Raw    string `json:"raw"`    // the value as Python's decode("utf-8", "replace") reads it
}

// TestTheDecoderAgreesWithPython: every record the edge accepts, the Python server accepts and encodes
// to the same bytes; every record the real model made, the edge accepts; a dead letter's raw record is
// what the Python stages would write for it. The corpus comes from the
// Python test, which runs this one with EDGE_PREDICTION_CORPUS set.
func TestTheDecoderAgreesWithPython(t *testing.T) {
	path := os.Getenv("EDGE_PREDICTION_CORPUS")
	if path == "" {
		t.Skip("EDGE_PREDICTION_CORPUS unset: tests/unit/test_edge_decoder.py runs this test with its corpus")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var accepted, refused int
	var stricter []string // refused by the edge, accepted by the server
	scanner := bufio.NewScanner(bytes.NewReader(data))
	scanner.Buffer(nil, 1<<24)
	for scanner.Scan() {
		var c corpusRecord
		if err := json.Unmarshal(scanner.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		value, err := base64.StdEncoding.DecodeString(c.Value)
		if err != nil {
			t.Fatal(err)
		}
		if raw := decodeReplacing(value); raw != c.Raw {
			t.Errorf("%s: the dead letter's raw record %q, Python's %q", c.Name, raw, c.Raw)
		}
		p, err := decodePrediction(value)
		switch {
		case err != nil && c.Valid:
			t.Errorf("%s: the edge refuses a record of the real model: %v", c.Name, err)
		case err != nil:
			refused++
			if c.Python != "" {
				stricter = append(stricter, c.Name)
			}
		case c.Python == "":
			t.Errorf("%s: the edge accepts a record the Python server refuses: %q", c.Name, value)
		case hex.EncodeToString(p.wire) != c.Python:
			t.Errorf("%s: the edge encodes\n%x\nthe server\n%s", c.Name, p.wire, c.Python)
		default:
			accepted++
		}
	}
	if err := scanner.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d records accepted with the server's bytes, %d refused, %d of them accepted by the server: %s",
		accepted, refused, len(stricter), strings.Join(stricter, "; "))
	if accepted == 0 || refused == 0 {
		t.Fatalf("a corpus of %d accepted and %d refused records proves nothing", accepted, refused)
	}
}

func BenchmarkDecodePrediction(b *testing.B) {
	for b.Loop() {
		if _, err := decodePrediction([]byte(full)); err != nil {
			b.Fatal(err)
		}
	}
}
