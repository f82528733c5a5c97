package ratelimit

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var b Bucket
	for i := 0; i < 5; i++ {
		if !b.Allow(t0, 5, 5) {
			t.Fatalf("token %d of a full bucket of 5 refused", i)
		}
	}
	if b.Allow(t0, 5, 5) {
		t.Fatal("a sixth token at once")
	}
	if !b.Allow(t0.Add(200*time.Millisecond), 5, 5) {
		t.Fatal("no token back after 200 ms at 5/s")
	}
	var d Bucket
	if w := d.Take(t0, 10, 1); w != 0 {
		t.Fatalf("first take waits %v", w)
	}
	if w := d.Take(t0, 10, 1); w != 100*time.Millisecond {
		t.Fatalf("second take at once waits %v, want 100ms", w)
	}
}
