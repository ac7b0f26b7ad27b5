// Command stream-subscribers opens many server-streaming calls and records when each message arrives, for
// bench/grpc.py's fan-out: a Python subscriber spends more CPU receiving a message than the server
// spends sending it, on the same cores, so it would measure itself more than the server.
//
// Protocol on stdout: "ready" once every stream has received its first message; after stdin reaches
// EOF, "cpu <seconds>" (this process's CPU from ready to stop), then one line
// per message received, "<stream> <unix ns> <message hex>", then "end". Messages stay raw bytes: the
// caller parses them after the run.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"cryptopredict/bench/internal/measure"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

type received struct {
	at      int64
	message []byte
}

func main() {
	target := flag.String("target", "127.0.0.1:50051", "server address")
	method := flag.String("method", "/cryptopredict.v1.PredictionService/StreamPredictions", "full method name")
	requestHex := flag.String("request", "", "the encoded request message, hex")
	streams := flag.Int("streams", 1000, "number of streams")
	perConn := flag.Int("per-conn", 50, "streams sharing one connection")
	flag.Parse()
	request, err := hex.DecodeString(*requestHex)
	if err != nil {
		log.Fatalf("bad -request: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var conns []*grpc.ClientConn
	for i := 0; i < (*streams+*perConn-1) / *perConn; i++ {
		conn, err := grpc.Dial(*target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			log.Fatal(err)
		}
		conns = append(conns, conn)
	}
	records := make([][]received, *streams)
	var subscribed atomic.Int64
	ready := make(chan struct{})
	var wg sync.WaitGroup
	desc := &grpc.StreamDesc{ServerStreams: true}
	for i := 0; i < *streams; i++ {
		wg.Add(1)
		go func(index int) {
			defer wg.Done()
			stream, err := conns[index%len(conns)].NewStream(ctx, desc, *method, grpc.ForceCodec(measure.RawCodec{}))
			if err != nil {
				log.Fatalf("stream %d: %v", index, err)
			}
			if err := stream.SendMsg(&request); err != nil {
				log.Fatalf("stream %d: %v", index, err)
			}
			if err := stream.CloseSend(); err != nil {
				log.Fatalf("stream %d: %v", index, err)
			}
			for {
				var message []byte
				if err := stream.RecvMsg(&message); err != nil {
					if len(records[index]) == 0 {
						log.Fatalf("stream %d ended before its first message: %v", index, err)
					}
					if err != io.EOF && ctx.Err() == nil {
						log.Printf("stream %d: %v", index, err)
					}
					return
				}
				records[index] = append(records[index], received{time.Now().UnixNano(), message})
				if len(records[index]) == 1 && subscribed.Add(1) == int64(*streams) {
					close(ready)
				}
			}
		}(i)
	}

	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	defer out.Flush()
	<-ready
	// No collection while measuring, as the Python clients do: a pause here would be counted as the
	// server's latency. What is received meanwhile (a few MB) stays in memory until the end anyway.
	runtime.GC()
	debug.SetGCPercent(-1)
	fmt.Fprintln(out, "ready")
	out.Flush()
	cpuAtReady := measure.CPUSeconds()
	io.Copy(io.Discard, os.Stdin) // the caller closes stdin to stop
	cpu := measure.CPUSeconds() - cpuAtReady
	cancel()
	wg.Wait()
	fmt.Fprintf(out, "cpu %.6f\n", cpu)
	for index, stream := range records {
		for _, r := range stream {
			fmt.Fprintf(out, "%d %d %s\n", index, r.at, hex.EncodeToString(r.message))
		}
	}
	fmt.Fprintln(out, "end")
}
