package main

import (
	"fmt"
	"log"
	"sync"
	"time"
)

// logLimiter writes a message of a key (an error of a partition) once in every period, with the count
// of the ones it left out: Kafka can give the same error at every fetch, several times a second.
type logLimiter struct {
	every  time.Duration
	now    func() time.Time
	output func(string)

	mu   sync.Mutex
	last map[string]time.Time // key -> when its message was last written
	left map[string]int       // key -> messages left out since
}

func newLogLimiter(every time.Duration) *logLimiter {
	return &logLimiter{
		every: every, now: time.Now, output: func(s string) { log.Print(s) },
		last: map[string]time.Time{}, left: map[string]int{},
	}
}

func (l *logLimiter) printf(key, format string, args ...any) {
	l.mu.Lock()
	now := l.now()
	if last, ok := l.last[key]; ok && now.Sub(last) < l.every {
		l.left[key]++
		l.mu.Unlock()
		return
	}
	if len(l.last) >= 10_000 { // keys that come and go (offsets in the message, say): forget the old
		for k, t := range l.last {
			if now.Sub(t) >= l.every {
				delete(l.last, k)
				delete(l.left, k)
			}
		}
	}
	left := l.left[key]
	l.last[key] = now
	delete(l.left, key)
	l.mu.Unlock()
	message := fmt.Sprintf(format, args...)
	if left > 0 {
		message += fmt.Sprintf(" (and %d more times since it was last logged)", left)
	}
	l.output(message)
}
