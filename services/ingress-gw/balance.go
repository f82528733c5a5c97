package gateway

// Choosing a worker: least connections, from the loads workers report to
// state plus what this gateway routed since the last report, and never
// less than this gateway's own open connections to it.

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scc-k8s/scc/proto/sccv1"
)

// backend is one worker as this gateway sees it. A backend that leaves
// the view is dropped from the table; connections still open to it keep
// their pointer and count against it alone, so the counts of the workers
// that stay are never touched by those that went (the failure of proxies
// that index counters by position).
type backend struct {
	id, addr string
	noTunnel atomic.Bool // it answered a tunnel session with 404: an older worker

	// guarded by balancer.mu
	reported     int64 // open sockets in the worker's last report
	liveAtReport int64 // live when that report came
	ready        bool
	draining     bool
	live         int64 // this gateway's open connections to it
}

// estimate is the worker's load as far as this gateway knows: what it
// last reported plus what this gateway routed to it since (opens minus
// closes). A report is up to a second old when it comes (state passes
// loads on once a second) and may predate connections this gateway has
// open: the estimate is never below those, or a burst of new clients
// would pile onto whichever worker's stale report came last.
func (b *backend) estimate() int64 {
	return max(b.reported+b.live-b.liveAtReport, b.live, 0)
}

// balancer holds the routable workers.
type balancer struct {
	mu       sync.Mutex
	backends map[string]*backend
	order    []*backend    // the same, for a stable, cheap scan
	updated  chan struct{} // closed (and replaced) by each update
}

func newBalancer() *balancer {
	return &balancer{backends: make(map[string]*backend), updated: make(chan struct{})}
}

// update applies a cluster view's workers.
func (bl *balancer) update(workers []*sccv1.Member) {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	close(bl.updated)
	bl.updated = make(chan struct{})
	next := make(map[string]*backend, len(workers))
	order := make([]*backend, 0, len(workers))
	for _, w := range workers {
		if w.Address == "" {
			continue
		}
		b := bl.backends[w.Id]
		if b == nil || b.addr != w.Address {
			b = &backend{id: w.Id, addr: w.Address, reported: int64(w.Load)}
		}
		if int64(w.Load) != b.reported {
			// A fresh report includes what this gateway routed before it.
			b.reported, b.liveAtReport = int64(w.Load), b.live
		}
		b.ready, b.draining = w.Ready, w.Draining
		next[w.Id] = b
		order = append(order, b)
	}
	bl.backends, bl.order = next, order
}

// pick chooses the routable worker with the least estimated load, ties
// broken at random, skipping those in skip (already tried), and counts
// the connection against it. It returns nil when none is routable.
func (bl *balancer) pick(skip []*backend) *backend {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	var best *backend
	ties := 0
	for _, b := range bl.order {
		if !b.ready || b.draining || contains(skip, b) {
			continue
		}
		switch {
		case best == nil || b.estimate() < best.estimate():
			best, ties = b, 1
		case b.estimate() == best.estimate():
			ties++
			if rand.IntN(ties) == 0 { // reservoir: each tie equally likely
				best = b
			}
		}
	}
	if best != nil {
		best.live++
	}
	return best
}

// await picks a worker as pick does; when none is routable it waits for
// views that bring one, up to wait (or until ctx ends), and returns nil if
// none did.
func (bl *balancer) await(ctx context.Context, wait time.Duration) *backend {
	var deadline <-chan time.Time
	for {
		bl.mu.Lock()
		updated := bl.updated
		bl.mu.Unlock()
		if b := bl.pick(nil); b != nil || wait < 0 {
			return b
		}
		if deadline == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-updated:
		case <-deadline:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// done uncounts a connection that pick counted.
func (bl *balancer) done(b *backend) {
	bl.mu.Lock()
	b.live--
	bl.mu.Unlock()
}

// routable counts the workers new connections may go to.
func (bl *balancer) routable() int {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	n := 0
	for _, b := range bl.order {
		if b.ready && !b.draining {
			n++
		}
	}
	return n
}

// Worker is a worker as the gateway sees it (Gateway.Workers).
type Worker struct {
	ID, Addr        string
	Ready, Draining bool
	// Reported is the worker's last reported load; Estimate adds what
	// this gateway routed since; Live is this gateway's open connections.
	Reported, Estimate, Live int64
}

func (bl *balancer) snapshot() []Worker {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	out := make([]Worker, 0, len(bl.order))
	for _, b := range bl.order {
		out = append(out, Worker{ID: b.id, Addr: b.addr, Ready: b.ready, Draining: b.draining,
			Reported: b.reported, Estimate: b.estimate(), Live: b.live})
	}
	return out
}

func contains(list []*backend, b *backend) bool {
	for _, x := range list {
		if x == b {
			return true
		}
	}
	return false
}
