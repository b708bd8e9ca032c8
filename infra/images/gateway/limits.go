package main

import (
	"sync"

	"golang.org/x/time/rate"
)

// nodeLimits keeps one node from crowding out the others (and the API, asked on every call): a token bucket
// per node for every call, and a cap on its concurrent long polls, each of which holds a Temporal frontend slot.
// Entries are per enrolled node (ids come from certificates the CA signed), so the maps stay small.
type nodeLimits struct {
	rps      rate.Limit
	burst    int
	maxPolls int

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	polls    map[string]int
}

func newNodeLimits(rps float64, burst, maxPolls int) *nodeLimits {
	return &nodeLimits{rps: rate.Limit(rps), burst: burst, maxPolls: maxPolls, limiters: map[string]*rate.Limiter{}, polls: map[string]int{}}
}

func (l *nodeLimits) allow(nodeID string) bool {
	l.mu.Lock()
	limiter, ok := l.limiters[nodeID]
	if !ok {
		limiter = rate.NewLimiter(l.rps, l.burst)
		l.limiters[nodeID] = limiter
	}
	l.mu.Unlock()
	return limiter.Allow()
}

// startPoll takes one of the node's poll slots; done gives it back. ok is false when all are taken.
func (l *nodeLimits) startPoll(nodeID string) (done func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.polls[nodeID] >= l.maxPolls {
		return nil, false
	}
	l.polls[nodeID]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.polls[nodeID]--; l.polls[nodeID] == 0 {
			delete(l.polls, nodeID)
		}
	}, true
}
