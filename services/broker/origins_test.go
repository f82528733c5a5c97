package broker

import "testing"

// The ring keeps order and sizes across wrap-arounds and growth.
func TestOrigins(t *testing.T) {
	var q origins
	next, first := uint64(1), uint64(1) // seq of the next push, of the oldest held
	for round := 0; round < 50; round++ {
		for i := 0; i < 37+round; i++ {
			q.push(origin{seq: next, size: int(next)})
			next++
		}
		k := min(q.len(), 30+round/2)
		want := 0
		for s := first; s < first+uint64(k); s++ {
			want += int(s)
		}
		if got := q.pop(k); got != want {
			t.Fatalf("round %d: popped size %d, want %d", round, got, want)
		}
		first += uint64(k)
	}
	rest := q.take()
	if uint64(len(rest)) != next-first || q.len() != 0 {
		t.Fatalf("took %d, want %d; %d left", len(rest), next-first, q.len())
	}
	for i, o := range rest {
		if o.seq != first+uint64(i) {
			t.Fatalf("out of order at %d: seq %d, want %d", i, o.seq, first+uint64(i))
		}
	}
}
