package main

import "google.golang.org/protobuf/encoding/protowire"

// The fields of protos/cryptopredict/v1/predictions.proto the edge reads in requests, and those of the
// Prediction it encodes (prediction.go has the rest).
const (
	requestPairs    = 1 // StreamPredictionsRequest.pairs; GetLatestPredictionRequest.pair
	requestInterval = 2 // StreamPredictionsRequest.interval_s
	requestHorizon  = 3 // StreamPredictionsRequest.horizon_s
	requestExchange = 5 // StreamPredictionsRequest.exchange
	latestTarget    = 5 // GetLatestPredictionRequest.target ("" or "price"; StreamPredictionsRequest's is 4)
	latestExchange  = 6 // GetLatestPredictionRequest.exchange

	responsePrediction = 1 // StreamPredictionsResponse.prediction

	predictionPair        = 1
	predictionInterval    = 2
	predictionHorizon     = 3
	predictionMadeAt      = 4
	predictionFeatureTime = 5
	predictionExchange    = 17

	// What a request or prediction without an exchange means: clients and servers from before exchanges
	// existed knew Kraken only.
	defaultExchange = "kraken"
	// A StreamPredictionsRequest's exchange that means every exchange.
	anyExchange = "*"

	timestampSeconds = 1
	timestampNanos   = 2
)

// key is what the hub keeps one latest prediction of, as the server does: (exchange, pair, interval_s,
// horizon_s). The same pair on two exchanges is two keys.
type key struct {
	exchange string // never empty: a prediction's, or defaultExchange where a request names none
	pair     string
	interval int64
	horizon  int64
}

// lookup is an exact GetLatestPredictionRequest: its key, and the target it names (the server says
// which it serves, so the target is part of what it vouches for).
type lookup struct {
	key
	target string
}

// filter is a StreamPredictionsRequest: exchange anyExchange, empty pairs, zero interval or zero horizon
// mean "any".
type filter struct {
	exchange string // never empty: defaultExchange where the request has none
	pairs    map[string]bool
	interval int64
	horizon  int64
}

func (f filter) wants(k key) bool {
	return (f.exchange == anyExchange || f.exchange == k.exchange) &&
		(len(f.pairs) == 0 || f.pairs[k.pair]) &&
		(f.interval == 0 || f.interval == k.interval) &&
		(f.horizon == 0 || f.horizon == k.horizon)
}

// prediction is one encoded StreamPredictionsResponse, with what the hub orders it by.
type prediction struct {
	key         key
	featureTime int64 // unix µs: the newest candle wins...
	madeAt      int64 // ...and for the same candle, the newest forecast
	wire        []byte
}

func (p prediction) newerThan(q prediction) bool {
	if p.featureTime != q.featureTime {
		return p.featureTime > q.featureTime
	}
	return p.madeAt > q.madeAt
}

// fields calls visit for each field of message b, with the field's value for bytes and varints.
func fields(b []byte, visit func(num protowire.Number, typ protowire.Type, value []byte, varint uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var value []byte
		var varint uint64
		switch typ {
		case protowire.BytesType:
			value, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			varint, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := visit(num, typ, value, varint); err != nil {
			return err
		}
	}
	return nil
}

// exchangeOr is the exchange a message names, defaultExchange when it names none.
func exchangeOr(exchange string) string {
	if exchange == "" {
		return defaultExchange
	}
	return exchange
}

func parseRequest(b []byte) (filter, error) {
	f := filter{pairs: map[string]bool{}}
	err := fields(b, func(num protowire.Number, typ protowire.Type, value []byte, varint uint64) error {
		switch {
		case num == requestPairs && typ == protowire.BytesType:
			f.pairs[string(value)] = true
		case num == requestInterval && typ == protowire.VarintType:
			f.interval = int64(varint)
		case num == requestHorizon && typ == protowire.VarintType:
			f.horizon = int64(varint)
		case num == requestExchange && typ == protowire.BytesType:
			f.exchange = string(value)
		}
		return nil
	})
	f.exchange = exchangeOr(f.exchange)
	return f, err
}

// parseLatestRequest reads a GetLatestPredictionRequest; false when it names no exact key (a zero
// interval or horizon has the server's own meaning), cannot be read, or has any other field: those
// (quantile_levels among them) change the answer, which only the server then gives.
func parseLatestRequest(b []byte) (lookup, bool) {
	var l lookup
	known := true
	err := fields(b, func(num protowire.Number, typ protowire.Type, value []byte, varint uint64) error {
		switch {
		case num == requestPairs && typ == protowire.BytesType:
			l.pair = string(value)
		case num == requestInterval && typ == protowire.VarintType:
			l.interval = int64(varint)
		case num == requestHorizon && typ == protowire.VarintType:
			l.horizon = int64(varint)
		case num == latestTarget && typ == protowire.BytesType:
			l.target = string(value)
		case num == latestExchange && typ == protowire.BytesType:
			l.exchange = string(value)
		default:
			known = false
		}
		return nil
	})
	l.exchange = exchangeOr(l.exchange)
	return l, err == nil && known && l.pair != "" && l.interval > 0 && l.horizon > 0
}
