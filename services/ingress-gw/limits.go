package gateway

// Edge limits: concurrent connections per client address and the rate of
// upgrades.

import (
	"sync"
	"time"
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

// bucket is a token bucket: rate tokens per second, up to burst.
type bucket struct {
	rate, burst float64 // rate 0: no limit
	mu          sync.Mutex
	tokens      float64
	last        time.Time
}

func newBucket(rate float64, burst int) *bucket {
	if burst <= 0 {
		burst = max(int(rate), 1)
	}
	return &bucket{rate: rate, burst: float64(burst), tokens: float64(burst)}
}

func (b *bucket) allow(now time.Time) bool {
	if b.rate <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
