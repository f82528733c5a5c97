package worker

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestCompacted(t *testing.T) {
	m := map[int]int{}
	dels, copies := 0, 0
	for i := 0; i < 10000; i++ {
		m[i] = i
	}
	for i := 0; i < 10000; i++ {
		before := m
		delete(m, i)
		m = compacted(m, &dels)
		if len(m) != 10000-i-1 {
			t.Fatalf("lost entries: %d left after %d deletions", len(m), i+1)
		}
		if _, ok := m[i+1]; i+1 < 10000 && !ok {
			t.Fatalf("entry %d gone", i+1)
		}
		if mapChanged(before, m) {
			copies++
		}
	}
	// Emptying a big map ends with a small fresh one: the copies happen as
	// deletions pass twice the live entries.
	if copies == 0 {
		t.Fatal("never copied")
	}
}

// mapChanged tells whether two map values are different maps.
func mapChanged(a, b map[int]int) bool {
	a[-1] = 0
	_, same := b[-1]
	delete(a, -1)
	return !same
}

func TestWritersTrim(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	w := newWriters(stop)
	// 300 writers finish their bursts and wait; nothing is busy now.
	w.idle.Store(0)
	ready := make(chan struct{})
	for range 300 {
		go func() {
			w.idle.Add(1)
			ready <- struct{}{}
			if s := <-w.tasks; s == nil {
				w.idle.Add(-1)
			}
		}()
	}
	for range 300 {
		<-ready
	}
	// trim hands out its nils without blocking: only to writers already
	// parked on the channel, so wait until all 300 are.
	for i := 0; parkedWriters() < 300; i++ {
		if i == 500 {
			t.Fatalf("only %d of 300 writers parked", parkedWriters())
		}
		time.Sleep(2 * time.Millisecond)
	}
	w.peak.Store(100) // the last interval needed 100 at once
	settled := func(want int32) {
		t.Helper()
		for i := 0; w.idle.Load() != want; i++ {
			if i == 500 {
				t.Fatalf("%d idle, want %d", w.idle.Load(), want)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	w.trim()
	settled(100)
	w.trim() // the peak is now what is busy (0): down to the minimum
	settled(minIdleWriters)
	for range minIdleWriters { // release the rest
		w.tasks <- nil
	}
}

// parkedWriters counts this test's fake writers blocked receiving.
func parkedWriters() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "[chan receive") && strings.Contains(g, "TestWritersTrim.func") {
			n++
		}
	}
	return n
}
