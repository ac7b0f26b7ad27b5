package main

import (
	"log"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// The fan-out allocates a few hundred bytes per message sent. At Go's default heap goal (twice the live
// heap) a collection came every ~40 predictions with 1,000 subscribers, and the prediction it overlapped
// reached them up to twice as late. So the goal is five times the live heap, held under a share of the
// container's memory limit where there is one (cgroup v2). GOGC and GOMEMLIMIT, when set, win.
const (
	gcPercent        = 400
	memoryLimitShare = 0.8
	cgroupMemoryMax  = "/sys/fs/cgroup/memory.max"
)

// gcSettings is the GC percent and the soft memory limit (bytes) to set; -1 leaves one as it is: set in
// the environment, or no container limit to hold the heap under. memoryMax is cgroup v2's memory.max.
func gcSettings(gogc, gomemlimit string, memoryMax []byte) (percent int, limit int64) {
	percent, limit = -1, -1
	if gogc == "" {
		percent = gcPercent
	}
	if gomemlimit == "" {
		if bound, err := strconv.ParseInt(strings.TrimSpace(string(memoryMax)), 10, 64); err == nil && bound > 0 {
			limit = int64(float64(bound) * memoryLimitShare)
		}
	}
	return percent, limit
}

func tuneGC() {
	memoryMax, _ := os.ReadFile(cgroupMemoryMax) // absent outside a cgroup v2 container: no limit
	percent, limit := gcSettings(os.Getenv("GOGC"), os.Getenv("GOMEMLIMIT"), memoryMax)
	if percent >= 0 {
		debug.SetGCPercent(percent)
	}
	if limit >= 0 {
		debug.SetMemoryLimit(limit)
		log.Printf("heap held under %d MiB (%.0f%% of the container's memory limit)", limit>>20, memoryLimitShare*100)
	}
}
