// Package measure holds what the bench's Go clients share: a codec that leaves messages as bytes, and
// the process's own CPU time.
package measure

import (
	"log"
	"syscall"
	"time"
)

// RawCodec passes messages through as bytes: requests come encoded from the caller, and answers are kept
// (or only counted) undecoded. Each message received is a copy of its own.
type RawCodec struct{}

func (RawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }

func (RawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}

func (RawCodec) Name() string { return "proto" }

// CPUSeconds is the CPU time this process has used, user and system.
func CPUSeconds() float64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		log.Fatal(err)
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano()).Seconds()
}
