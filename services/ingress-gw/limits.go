package gateway

// Edge limits: concurrent connections per client address and the rate of
// upgrades.

import (
	"sync"
	"time"

	"github.com/scc-k8s/scc/internal/ratelimit"
)

// perIP counts each client address's open proxied connections and
// in-flight requests.
type perIP struct {
	limit int // 0: no limit
	mu    sync.Mutex
	n     map[string]int
}

func (p *perIP) acquire(ip string) bool {
	if p.limit <= 0 {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[ip] >= p.limit {
		return false
	}
	if p.n == nil {
		p.n = make(map[string]int)
	}
	p.n[ip]++
	return true
}

func (p *perIP) release(ip string) {
	if p.limit <= 0 {
		return
	}
	p.mu.Lock()
	if p.n[ip]--; p.n[ip] <= 0 {
		delete(p.n, ip)
	}
	p.mu.Unlock()
}

// bucket is the gateway-wide upgrade rate: rate tokens per second, up to
// burst. A zero rate allows everything.
type bucket struct {
	rate, burst float64
	mu          sync.Mutex
	b           ratelimit.Bucket
}

func newBucket(rate float64, burst int) *bucket {
	if burst <= 0 {
		burst = max(int(rate), 1)
	}
	return &bucket{rate: rate, burst: float64(burst)}
}

func (b *bucket) allow(now time.Time) bool {
	if b.rate <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Allow(now, b.rate, b.burst)
}
