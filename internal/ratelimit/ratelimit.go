// Package ratelimit is a token bucket small enough to keep one per
// socket: the rate and burst are the caller's (often a server-wide
// setting), the bucket holds only its tokens and when it last counted.
// A Bucket is not safe for concurrent use.
package ratelimit

import "time"

// Bucket is a token bucket; the zero value is full.
type Bucket struct {
	tokens float64
	last   time.Time
}

func (b *Bucket) refill(now time.Time, rate, burst float64) {
	if b.last.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
}

// Allow takes a token if there is one.
func (b *Bucket) Allow(now time.Time, rate, burst float64) bool {
	b.refill(now, rate, burst)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Take takes a token, into debt if need be, and says how long the caller
// should wait to have been within the rate (zero when it is).
func (b *Bucket) Take(now time.Time, rate, burst float64) time.Duration {
	b.refill(now, rate, burst)
	b.tokens--
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / rate * float64(time.Second))
}
