package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// A record of the predictions topic is the JSON of cryptopredict.models.ml.Prediction. decodePrediction
// validates it as the Python server's consumer does (Prediction.model_validate_json) and encodes the
// StreamPredictionsResponse the server would send for it (grpc_server/convert.py,
// prediction_response_bytes), so the edge never serves what the server would refuse, and serves the
// same bytes. tests/unit/test_edge_decoder.py proves both on a corpus of valid and broken records.
//
// Where pydantic is lenient in ways no producer of the project uses, the edge refuses instead:
//   - numbers: only JSON numbers, finite (pydantic also takes "1.5", true, NaN and Infinity, and
//     1e999 as infinity); integers without fraction or exponent and within int64 (pydantic takes 60.0,
//     "60", true, and any size, which the server then fails to encode);
//   - times: only YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM) (pydantic also takes a space or 't' for 'T',
//     'z', no seconds, a comma, ±HHMM, more fraction digits, and unix times as numbers or strings);
//   - JSON: duplicate keys (pydantic keeps the last).

// Prediction's fields: pydantic forbids any other.
var predictionFields = map[string]bool{
	"exchange": true, "pair": true, "interval_s": true, "horizon_s": true, "made_at": true,
	"feature_time": true, "target_time": true, "last_price": true, "predicted_price": true,
	"lower_price": true, "upper_price": true, "interval_level": true, "quantiles": true,
	"predicted_volatility": true, "volatility_regime": true, "model_name": true, "model_version": true,
}

// The literals of cryptopredict.topics.Exchange and cryptopredict.models.ml.VolatilityRegime.
var (
	exchanges = map[string]bool{"kraken": true, "coinbase": true, "binance": true}
	regimes   = map[string]bool{"calm": true, "mid": true, "wild": true}
)

// Field numbers of Prediction and QuantilePrice in protos/cryptopredict/v1/predictions.proto beyond
// those wire.go reads.
const (
	predictionTargetTime          = 6
	predictionLastPrice           = 7
	predictionPredictedPrice      = 8
	predictionModelName           = 9
	predictionModelVersion        = 10
	predictionLowerPrice          = 11
	predictionUpperPrice          = 12
	predictionIntervalLevel       = 13
	predictionQuantiles           = 14
	predictionPredictedVolatility = 15
	predictionVolatilityRegime    = 16

	quantileLevel = 1
	quantilePrice = 2
)

type quantile struct{ level, price float64 }

// predictionRecord is a valid Prediction; an optional field is nil where the model has None.
type predictionRecord struct {
	exchange, pair                  string
	interval, horizon               int64
	madeAt, featureTime, targetTime time.Time // UTC, whole microseconds
	lastPrice, predictedPrice       float64
	lowerPrice, upperPrice          *float64
	intervalLevel                   *float64
	quantiles                       []quantile
	predictedVolatility             *float64
	volatilityRegime                string // "" for None
	modelName, modelVersion         string
}

// fieldError names the field a record fails on, as pydantic's errors do.
func fieldError(field, format string, args ...any) error {
	return fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...))
}

func asString(field string, v jsonValue) (string, error) {
	if v.kind != jsonString {
		return "", fieldError(field, "want a string, got %s", v.kind)
	}
	return v.text, nil
}

func asFloat(field string, v jsonValue) (float64, error) {
	if v.kind != jsonNumber {
		return 0, fieldError(field, "want a number, got %s", v.kind)
	}
	f, err := strconv.ParseFloat(v.text, 64)
	if err != nil || math.IsInf(f, 0) {
		return 0, fieldError(field, "%s is out of range", v.text)
	}
	return f, nil
}

func asInt(field string, v jsonValue) (int64, error) {
	if v.kind != jsonNumber || !v.integer {
		return 0, fieldError(field, "want an integer, got %s", describe(v))
	}
	i, err := strconv.ParseInt(v.text, 10, 64)
	if err != nil {
		return 0, fieldError(field, "%s is out of range", v.text)
	}
	return i, nil
}

func describe(v jsonValue) string {
	if v.kind == jsonNumber {
		return v.text
	}
	return v.kind.String()
}

// floatIn reads a number bounded below (above 0, or at least 0) and, with below1, under 1.
func floatIn(field string, v jsonValue, inclusive, below1 bool) (float64, error) {
	f, err := asFloat(field, v)
	if err != nil {
		return 0, err
	}
	switch {
	case inclusive && !(f >= 0):
		return 0, fieldError(field, "must be at least 0, got %v", f)
	case !inclusive && !(f > 0):
		return 0, fieldError(field, "must be greater than 0, got %v", f)
	case below1 && !(f < 1):
		return 0, fieldError(field, "must be less than 1, got %v", f)
	}
	return f, nil
}

func optionalFloat(field string, v jsonValue, inclusive, below1 bool) (*float64, error) {
	if v.kind == jsonNull {
		return nil, nil
	}
	f, err := floatIn(field, v, inclusive, below1)
	return &f, err
}

func twoDigits(s string) (int, bool) {
	if len(s) != 2 || s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9' {
		return 0, false
	}
	return int(s[0]-'0')*10 + int(s[1]-'0'), true
}

// parseTime reads YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM) into UTC, truncated to microseconds as
// Python's datetime holds it; false for anything else, an impossible date or time included.
func parseTime(s string) (time.Time, bool) {
	if len(s) < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	year, err := strconv.Atoi(s[:4])
	if err != nil || s[0] == '+' || s[0] == '-' || year < 1 {
		return time.Time{}, false
	}
	month, okMonth := twoDigits(s[5:7])
	day, okDay := twoDigits(s[8:10])
	hour, okHour := twoDigits(s[11:13])
	minute, okMinute := twoDigits(s[14:16])
	second, okSecond := twoDigits(s[17:19])
	if !okMonth || !okDay || !okHour || !okMinute || !okSecond ||
		month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59 {
		return time.Time{}, false
	}
	if day > time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day() { // the month's last day
		return time.Time{}, false
	}
	rest := s[19:]
	micros := 0
	if rest[0] == '.' {
		n := 1
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		digits := rest[1:n]
		if len(digits) < 1 || len(digits) > 9 {
			return time.Time{}, false
		}
		for i := 0; i < 6; i++ { // beyond microseconds, the digits are dropped, as pydantic does
			micros *= 10
			if i < len(digits) {
				micros += int(digits[i] - '0')
			}
		}
		rest = rest[n:]
	}
	offset := 0
	switch {
	case rest == "Z":
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		h, okH := twoDigits(rest[1:3])
		m, okM := twoDigits(rest[4:6])
		if !okH || !okM || h > 23 || m > 59 {
			return time.Time{}, false
		}
		offset = (h*60 + m) * 60
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(month), day, hour, minute, second, micros*1000, time.UTC).
		Add(-time.Duration(offset) * time.Second)
	if t.Year() < 1 || t.Year() > 9999 { // Python's datetime cannot hold it in UTC
		return time.Time{}, false
	}
	return t, true
}

func asTime(field string, v jsonValue) (time.Time, error) {
	if v.kind != jsonString {
		return time.Time{}, fieldError(field, "want an RFC 3339 time string, got %s", v.kind)
	}
	t, ok := parseTime(v.text)
	if !ok {
		return time.Time{}, fieldError(field, "%q is not a UTC-convertible time YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM)", v.text)
	}
	return t, nil
}

func parseQuantile(field string, v jsonValue) (quantile, error) {
	var q quantile
	if v.kind != jsonObject {
		return q, fieldError(field, "want an object, got %s", v.kind)
	}
	var hasLevel, hasPrice bool
	for _, m := range v.members {
		var err error
		switch m.name {
		case "level":
			q.level, err = floatIn(field+".level", m.value, false, true)
			hasLevel = true
		case "price":
			q.price, err = floatIn(field+".price", m.value, false, false)
			hasPrice = true
		default:
			err = fieldError(field+"."+m.name, "extra field not permitted")
		}
		if err != nil {
			return q, err
		}
	}
	if !hasLevel {
		return q, fieldError(field+".level", "field required")
	}
	if !hasPrice {
		return q, fieldError(field+".price", "field required")
	}
	return q, nil
}

// decodeRecord validates the JSON of a Prediction.
func decodeRecord(value []byte) (predictionRecord, error) {
	p := predictionRecord{exchange: defaultExchange}
	if len(value) == 0 {
		return p, errors.New("empty record")
	}
	doc, err := parseJSON(value)
	if err != nil {
		return p, err
	}
	if doc.kind != jsonObject {
		return p, fmt.Errorf("want an object, got %s", doc.kind)
	}
	present := map[string]bool{}
	for _, m := range doc.members {
		name, v := m.name, m.value
		if !predictionFields[name] {
			return p, fieldError(name, "extra field not permitted")
		}
		present[name] = true
		switch name {
		case "exchange":
			p.exchange, err = asString(name, v)
			if err == nil && !exchanges[p.exchange] {
				err = fieldError(name, "%q is not kraken, coinbase or binance", p.exchange)
			}
		case "pair":
			p.pair, err = asString(name, v)
		case "model_name":
			p.modelName, err = asString(name, v)
		case "model_version":
			p.modelVersion, err = asString(name, v)
		case "interval_s", "horizon_s":
			var i int64
			i, err = asInt(name, v)
			if err == nil && i <= 0 {
				err = fieldError(name, "must be greater than 0, got %d", i)
			}
			if name == "interval_s" {
				p.interval = i
			} else {
				p.horizon = i
			}
		case "made_at":
			p.madeAt, err = asTime(name, v)
		case "feature_time":
			p.featureTime, err = asTime(name, v)
		case "target_time":
			p.targetTime, err = asTime(name, v)
		case "last_price":
			p.lastPrice, err = floatIn(name, v, false, false)
		case "predicted_price":
			p.predictedPrice, err = floatIn(name, v, false, false)
		case "lower_price":
			p.lowerPrice, err = optionalFloat(name, v, false, false)
		case "upper_price":
			p.upperPrice, err = optionalFloat(name, v, false, false)
		case "interval_level":
			p.intervalLevel, err = optionalFloat(name, v, false, true)
		case "predicted_volatility":
			p.predictedVolatility, err = optionalFloat(name, v, true, false)
		case "volatility_regime":
			if v.kind != jsonNull {
				p.volatilityRegime, err = asString(name, v)
				if err == nil && !regimes[p.volatilityRegime] {
					err = fieldError(name, "%q is not calm, mid or wild", p.volatilityRegime)
				}
			}
		case "quantiles":
			if v.kind != jsonArray {
				err = fieldError(name, "want an array, got %s", v.kind)
				break
			}
			for i, item := range v.items {
				var q quantile
				if q, err = parseQuantile(fmt.Sprintf("quantiles.%d", i), item); err != nil {
					break
				}
				p.quantiles = append(p.quantiles, q)
			}
		}
		if err != nil {
			return p, err
		}
	}
	for _, name := range []string{
		"pair", "interval_s", "horizon_s", "made_at", "feature_time", "target_time",
		"last_price", "predicted_price", "model_name", "model_version",
	} {
		if !present[name] {
			return p, fieldError(name, "field required")
		}
	}
	for i := 1; i < len(p.quantiles); i++ {
		a, b := p.quantiles[i-1], p.quantiles[i]
		if !(a.level < b.level) {
			return p, errors.New("quantile levels must be distinct and ascending")
		}
		if a.price > b.price {
			return p, errors.New("quantile prices must not decrease with the level")
		}
	}
	return p, nil
}

func appendTimestamp(b []byte, num protowire.Number, t time.Time) []byte {
	var body []byte
	if s := t.Unix(); s != 0 {
		body = protowire.AppendTag(body, timestampSeconds, protowire.VarintType)
		body = protowire.AppendVarint(body, uint64(s))
	}
	if n := t.Nanosecond(); n != 0 {
		body = protowire.AppendTag(body, timestampNanos, protowire.VarintType)
		body = protowire.AppendVarint(body, uint64(n))
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, body)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" { // proto3: the default is not sent
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendDouble(b []byte, num protowire.Number, f float64) []byte {
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(f))
}

// appendImplicitDouble is a double without presence: not sent when +0.0, as protobuf does.
func appendImplicitDouble(b []byte, num protowire.Number, f float64) []byte {
	if math.Float64bits(f) == 0 {
		return b
	}
	return appendDouble(b, num, f)
}

func appendOptionalDouble(b []byte, num protowire.Number, f *float64) []byte {
	if f == nil {
		return b
	}
	return appendDouble(b, num, *f)
}

// encode is the StreamPredictionsResponse of p as grpc_server/convert.py encodes it: fields in number
// order, proto3 defaults left out, timestamps and optional doubles sent whenever set.
func (p predictionRecord) encode() []byte {
	var m []byte
	m = appendString(m, predictionPair, p.pair)
	m = protowire.AppendTag(m, predictionInterval, protowire.VarintType)
	m = protowire.AppendVarint(m, uint64(p.interval))
	m = protowire.AppendTag(m, predictionHorizon, protowire.VarintType)
	m = protowire.AppendVarint(m, uint64(p.horizon))
	m = appendTimestamp(m, predictionMadeAt, p.madeAt)
	m = appendTimestamp(m, predictionFeatureTime, p.featureTime)
	m = appendTimestamp(m, predictionTargetTime, p.targetTime)
	m = appendImplicitDouble(m, predictionLastPrice, p.lastPrice)
	m = appendImplicitDouble(m, predictionPredictedPrice, p.predictedPrice)
	m = appendString(m, predictionModelName, p.modelName)
	m = appendString(m, predictionModelVersion, p.modelVersion)
	m = appendOptionalDouble(m, predictionLowerPrice, p.lowerPrice)
	m = appendOptionalDouble(m, predictionUpperPrice, p.upperPrice)
	m = appendOptionalDouble(m, predictionIntervalLevel, p.intervalLevel)
	for _, q := range p.quantiles {
		var qm []byte
		qm = appendImplicitDouble(qm, quantileLevel, q.level)
		qm = appendImplicitDouble(qm, quantilePrice, q.price)
		m = protowire.AppendTag(m, predictionQuantiles, protowire.BytesType)
		m = protowire.AppendBytes(m, qm)
	}
	m = appendOptionalDouble(m, predictionPredictedVolatility, p.predictedVolatility)
	m = appendString(m, predictionVolatilityRegime, p.volatilityRegime)
	m = appendString(m, predictionExchange, p.exchange)
	r := protowire.AppendTag(nil, responsePrediction, protowire.BytesType)
	return protowire.AppendBytes(r, m)
}

// micros is t in microseconds since the epoch: whole years 1 to 9999 fit, where nanoseconds would not.
func micros(t time.Time) int64 {
	return t.Unix()*1_000_000 + int64(t.Nanosecond()/1000)
}

// decodePrediction is the prediction a record holds, as the hub keeps and sends it.
func decodePrediction(value []byte) (prediction, error) {
	r, err := decodeRecord(value)
	if err != nil {
		return prediction{}, err
	}
	return prediction{
		key:         key{exchange: r.exchange, pair: r.pair, interval: r.interval, horizon: r.horizon},
		featureTime: micros(r.featureTime),
		madeAt:      micros(r.madeAt),
		wire:        r.encode(),
	}, nil
}
