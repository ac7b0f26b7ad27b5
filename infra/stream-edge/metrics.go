package main

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
)

// The buckets of cryptopredict.metrics.LATENCY_BUCKETS, so the edge's delays compare with the server's.
var latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// histogram is a Prometheus histogram: a handful of figures need no client library.
type histogram struct {
	bounds []float64

	mu     sync.Mutex
	counts []int64 // per bucket, not cumulative; the last is +Inf
	sum    float64
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]int64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.counts[i]++
	h.sum += v
}

func (h *histogram) write(w io.Writer, name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var cumulative int64
	for i, bound := range h.bounds {
		cumulative += h.counts[i]
		fmt.Fprintf(w, "%s_bucket{le=%q} %d\n", name, strconv.FormatFloat(bound, 'g', -1, 64), cumulative)
	}
	cumulative += h.counts[len(h.bounds)]
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %g\n%s_count %d\n", name, cumulative, name, h.sum, name, cumulative)
}

func gauge(b bool) int {
	if b {
		return 1
	}
	return 0
}

// metrics serves Prometheus's text format.
func (e *edge) metrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	figure := func(name, kind, help string, value any) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, kind, name, value)
	}
	figure("cryptopredict_edge_subscribers", "gauge", "Open StreamPredictions streams on the edge.", e.hub.count())
	figure("cryptopredict_edge_dropped_total", "counter", "Predictions dropped for slow subscribers (oldest first).", e.hub.dropped.Load())
	fmt.Fprintf(w, "# HELP cryptopredict_edge_latest_total GetLatestPrediction calls, by who answered them.\n")
	fmt.Fprintf(w, "# TYPE cryptopredict_edge_latest_total counter\n")
	fmt.Fprintf(w, "cryptopredict_edge_latest_total{answered=\"edge\"} %d\n", e.latestFromEdge.Load())
	fmt.Fprintf(w, "cryptopredict_edge_latest_total{answered=\"upstream\"} %d\n", e.latestFromUpstream.Load())
	figure("cryptopredict_edge_upstream_serving", "gauge", "1 while the gRPC server's health says SERVING.", gauge(e.upstreamServing.Load()))
	c := e.consumer
	figure("cryptopredict_edge_kafka_connected", "gauge", "1 while brokers answered fetches in the last few seconds with more than partition errors.", gauge(c.connected()))
	figure("cryptopredict_edge_kafka_errors_total", "counter", "Failed connections to brokers, failed fetches and partition errors.", c.kafkaErrors.Load())
	figure("cryptopredict_edge_caught_up", "gauge", "1 once the predictions topic was read as far as it went at start.", gauge(c.caughtUp.Load()))
	figure("cryptopredict_edge_predictions_total", "counter", "Valid predictions read from the topic.", c.consumed.Load())
	figure("cryptopredict_edge_invalid_records_total", "counter", "Records of the predictions topic refused (each also a dead letter).", c.invalid.Load())
	figure("cryptopredict_edge_dead_letter_errors_total", "counter", "Dead letters Kafka did not take.", c.deadLetterErrors.Load())
	const delay = "cryptopredict_edge_prediction_delay_seconds"
	fmt.Fprintf(w, "# HELP %s From a prediction's made_at to its fan-out by the edge (queued for every subscriber).\n", delay)
	fmt.Fprintf(w, "# TYPE %s histogram\n", delay)
	c.delay.write(w, delay)
}
