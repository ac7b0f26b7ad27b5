package main

import "sync"

// maxCredentials bounds what the edge remembers: with authentication off the server accepts any
// authorization value, and a client could send a new one with every call.
const maxCredentials = 1024

// vouched is what the upstream has vouched for since the edge last saw it come up: the authorization
// values it accepted (joined; "" for none), and the lookups (key and target) it answered a
// GetLatestPrediction for with OK or NOT_FOUND (ones it serves). A server that restarts may come back with other tokens or targets, so
// each connection starts a new generation, and an answer from an earlier one is not recorded.
type vouched struct {
	mu          sync.Mutex
	generation  int
	credentials map[string]bool
	lookups     map[lookup]bool
}

func newVouched() *vouched {
	return &vouched{credentials: map[string]bool{}, lookups: map[lookup]bool{}}
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

// addLookup records l; the server vouches only for targets it serves, so their number stays small.
func (v *vouched) addLookup(generation int, l lookup) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if generation == v.generation {
		v.lookups[l] = true
	}
}

// answers: the edge may answer lookup l from this caller itself.
func (v *vouched) answers(authorization string, l lookup) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.credentials[authorization] && v.lookups[l]
}

func (v *vouched) reset() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.generation++
	clear(v.credentials)
	clear(v.lookups)
}
