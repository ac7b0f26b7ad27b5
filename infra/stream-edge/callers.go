package main

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc/peer"
)

// callers bounds the streams each caller holds on the edge, as the server does (its
// grpc.max_streams_per_caller): the server only sees a short admission stream per subscriber, so the
// edge, which holds the subscribers' streams, applies the bound to them itself. A caller is its
// authorization header (the server vouched for it on admission) or, without one, its address without
// the port. Callers at exempt hosts are counted but never refused; a limit of 0 bounds nobody.
type callers struct {
	limit  int
	exempt map[string]bool

	mu   sync.Mutex
	open map[string]int
}

func newCallers(limit int, exemptHosts []string) *callers {
	c := &callers{limit: limit, exempt: map[string]bool{}, open: map[string]int{}}
	for _, h := range exemptHosts {
		c.exempt[h] = true
	}
	return c
}

// identify is who calls, and whether their host is exempt from the bound.
func identify(ctx context.Context, exempt map[string]bool) (string, bool) {
	host := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		host = p.Addr.String()
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	if auth := authorization(ctx); auth != "" {
		return auth, exempt[host]
	}
	return host, exempt[host]
}

// take counts one more stream of caller; false (nothing counted) when it holds the limit already.
func (c *callers) take(caller string, exempt bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.limit > 0 && !exempt && c.open[caller] >= c.limit {
		return false
	}
	c.open[caller]++
	return true
}

func (c *callers) release(caller string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[caller] <= 1 {
		delete(c.open, caller)
	} else {
		c.open[caller]--
	}
}
