package main

import "sync"

// maxCredentials bounds what the edge remembers: with authentication off the server accepts any
// authorization value, and a client could send a new one with every call.
const maxCredentials = 1024

// vouched is what the upstream has vouched for since the edge last connected to it: the authorization
// values it accepted (joined; "" for none), and the keys it answered a GetLatestPrediction for with OK
// or NOT_FOUND (keys it serves). A server that restarts may come back with other tokens or targets, so
// each connection starts a new generation, and an answer from an earlier one is not recorded.
type vouched struct {
	mu          sync.Mutex
	generation  int
	credentials map[string]bool
	keys        map[key]bool
}

func newVouched() *vouched {
	return &vouched{credentials: map[string]bool{}, keys: map[key]bool{}}
}

// current is the generation to pass to add* for an answer to a call that starts now.
func (v *vouched) current() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.generation
}

func (v *vouched) addCredential(generation int, authorization string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if generation == v.generation && len(v.credentials) < maxCredentials {
		v.credentials[authorization] = true
	}
}

func (v *vouched) addKey(generation int, k key) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if generation == v.generation {
		v.keys[k] = true
	}
}

// answers: the edge may answer a lookup of k from this caller itself.
func (v *vouched) answers(authorization string, k key) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.credentials[authorization] && v.keys[k]
}

func (v *vouched) reset() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.generation++
	clear(v.credentials)
	clear(v.keys)
}
