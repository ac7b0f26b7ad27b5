// Command unary-load makes unary calls at a fixed rate over many connections, for bench/grpc.py's
// GetLatestPrediction loads: a general load generator (ghz) spent about 500 µs of CPU a call, nearly
// twice what the server spends, on the same 2 cores, so it measured its own contention as much as the
// server.
//
// The load is open: call i is due at start + i/rate, on connection i mod -connections, in a goroutine
// of its own, so no call waits for another's answer. A call's latency runs from its start to its answer,
// as ghz and the Python clients measure; how late each call started is reported beside it.
//
// Output on stdout, one JSON object: the latencies and start lags of the calls after the warm-up (ns,
// in call order), the errors by code, this process's CPU seconds and the wall seconds of the measured
// calls.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"log"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"cryptopredict/bench/internal/measure"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

type report struct {
	LatenciesNs []int64        `json:"latencies_ns"`
	LagsNs      []int64        `json:"lags_ns"`
	Errors      map[string]int `json:"errors"`
	CPUSeconds  float64        `json:"cpu_s"`
	WallSeconds float64        `json:"wall_s"`
}

func main() {
	target := flag.String("target", "127.0.0.1:50051", "server address")
	method := flag.String("method", "/cryptopredict.v1.PredictionService/GetLatestPrediction", "full method name")
	requestHex := flag.String("request", "", "the encoded request message, hex")
	connections := flag.Int("connections", 100, "connections (HTTP/2), the calls spread evenly over them")
	rate := flag.Float64("rate", 1000, "calls started per second, over all connections")
	calls := flag.Int("calls", 10000, "calls measured")
	warmup := flag.Int("warmup", 300, "calls made first at the same rate and left out")
	timeout := flag.Duration("timeout", 5*time.Second, "deadline of each call")
	flag.Parse()
	request, err := hex.DecodeString(*requestHex)
	if err != nil {
		log.Fatalf("bad -request: %v", err)
	}
	if *connections < 1 || *rate <= 0 || *calls < 1 || *warmup < 0 {
		log.Fatal("-connections, -rate and -calls must be positive, -warmup not negative")
	}

	conns := make([]*grpc.ClientConn, *connections)
	for i := range conns {
		if conns[i], err = grpc.Dial(*target, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			log.Fatal(err)
		}
		defer conns[i].Close()
	}
	total := *warmup + *calls
	latencies := make([]int64, total)
	lags := make([]int64, total)
	codes := make([]string, total)
	call := func(i int, due time.Time) {
		ctx, cancel := context.WithDeadline(context.Background(), due.Add(*timeout))
		defer cancel()
		started := time.Now()
		lags[i] = int64(started.Sub(due))
		var response []byte
		err := conns[i%len(conns)].Invoke(ctx, *method, &request, &response, grpc.ForceCodec(measure.RawCodec{}))
		latencies[i] = int64(time.Since(started))
		if err != nil {
			codes[i] = status.Code(err).String()
		}
	}

	// No collection while measuring: a pause here would be counted as the server's latency. A call
	// allocates a few KB, so a run stays within a few hundred MB.
	runtime.GC()
	debug.SetGCPercent(-1)
	interval := time.Duration(float64(time.Second) / *rate)
	var wg sync.WaitGroup
	var cpuAtStart float64
	var measuredFrom time.Time
	start := time.Now()
	for i := 0; i < total; i++ {
		due := start.Add(time.Duration(i) * interval)
		if i == *warmup {
			cpuAtStart, measuredFrom = measure.CPUSeconds(), due
		}
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			call(i, due)
		}()
	}
	wg.Wait()
	out := report{
		LatenciesNs: latencies[*warmup:],
		LagsNs:      lags[*warmup:],
		Errors:      map[string]int{},
		CPUSeconds:  measure.CPUSeconds() - cpuAtStart,
		WallSeconds: time.Since(measuredFrom).Seconds(),
	}
	for _, code := range codes[*warmup:] {
		if code != "" {
			out.Errors[code]++
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		log.Fatal(err)
	}
}
