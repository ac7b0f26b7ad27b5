package main

import (
	"sort"
	"sync"
	"sync/atomic"
)

// hub keeps the latest prediction per key and fans new ones out to subscribers, as the Python
// server's PredictionHub does: each subscriber has a bounded queue; when it is full the oldest queued
// prediction is dropped and counted, so a slow client never blocks the others or grows memory.
type hub struct {
	queueSize int

	mu          sync.Mutex
	latest      map[key]prediction
	subscribers map[*subscriber]struct{}
	closed      bool

	dropped atomic.Int64 // over all subscribers since start
}

type subscriber struct {
	filter  filter
	queue   chan []byte // closed by hub.close, after what is queued
	dropped atomic.Int64
}

func newHub(queueSize int) *hub {
	return &hub{
		queueSize:   queueSize,
		latest:      map[key]prediction{},
		subscribers: map[*subscriber]struct{}{},
	}
}

// offer queues wire, dropping the oldest queued message when the queue is full. Only the hub sends,
// under its lock; the subscriber's stream may take concurrently, hence the loop.
func (h *hub) offer(s *subscriber, wire []byte) {
	for {
		select {
		case s.queue <- wire:
			return
		default:
		}
		select {
		case <-s.queue:
			s.dropped.Add(1)
			h.dropped.Add(1)
		default:
		}
	}
}

// publish records p and fans it out; false when it is not newer than the latest of its key (a record
// read again after Kafka came back, or a duplicate).
func (h *hub) publish(p prediction) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed { // the queues are closed
		return false
	}
	if current, ok := h.latest[p.key]; ok && !p.newerThan(current) {
		return false
	}
	h.latest[p.key] = p
	for s := range h.subscribers {
		if s.filter.wants(p.key) {
			h.offer(s, p.wire)
		}
	}
	return true
}

// subscribe registers a subscriber whose queue already holds the latest prediction of each key it
// wants, oldest first: snapshot and registration under one lock, so nothing is missed or sent twice.
func (h *hub) subscribe(f filter) *subscriber {
	s := &subscriber{filter: f, queue: make(chan []byte, h.queueSize)}
	h.mu.Lock()
	defer h.mu.Unlock()
	var snapshot []prediction
	for k, p := range h.latest {
		if f.wants(k) {
			snapshot = append(snapshot, p)
		}
	}
	sort.Slice(snapshot, func(i, j int) bool { return snapshot[j].newerThan(snapshot[i]) })
	for _, p := range snapshot {
		h.offer(s, p.wire)
	}
	if h.closed {
		close(s.queue)
	} else {
		h.subscribers[s] = struct{}{}
	}
	return s
}

// latestOf is the latest prediction of k, encoded as the server encodes it.
func (h *hub) latestOf(k key) ([]byte, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.latest[k]
	return p.wire, ok
}

// endStreams ends every stream after what is queued for it: the server that admitted them went away.
// Clients reconnect, as they would to a server that restarted, and are admitted again. The latest
// predictions stay: they come from Kafka, not from the server.
func (h *hub) endStreams() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.endStreamsLocked()
}

// endStreamsLocked closes every subscriber's queue, once: its stream ends after what is queued. The
// caller holds the lock.
func (h *hub) endStreamsLocked() {
	for s := range h.subscribers {
		close(s.queue)
	}
	clear(h.subscribers)
}

// end unsubscribes s and closes its queue, unless the hub already did (endStreams, close).
func (h *hub) end(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subscribers[s]; ok {
		delete(h.subscribers, s)
		close(s.queue)
	}
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subscribers)
}

// close ends every stream once it has sent what is queued for it (the drain at shutdown).
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	h.endStreamsLocked()
}
