package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/scc-k8s/scc/proto/sccv1"
)

func worker(id string, load uint64, ready, draining bool) *sccv1.Member {
	return &sccv1.Member{Id: id, Role: sccv1.Role_ROLE_WORKER, Address: id + ":1", Load: load, Ready: ready, Draining: draining}
}

func TestPickLeastLoaded(t *testing.T) {
	b := newBalancer()
	b.update([]*sccv1.Member{worker("a", 10, true, false), worker("b", 3, true, false), worker("c", 0, false, false), worker("d", 0, true, true)})
	for i := 0; i < 7; i++ {
		if got := b.pick(nil); got.id != "b" {
			t.Fatalf("pick %d: %s, want b (a has 10, b %d; c unready, d draining)", i, got.id, 3+i)
		}
	}
	// b is at 10 now: the two share.
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		seen[b.pick(nil).id]++
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Fatalf("a and b at 10 each, then 10 picks: %v", seen)
	}
	if got := b.pick([]*backend{b.backends["a"], b.backends["b"]}); got != nil {
		t.Fatalf("with a and b skipped, picked %s", got.id)
	}
}

// The counts of the workers that stay are untouched when others come and
// go, and connections to a worker that left uncount only themselves.
func TestCountsSurviveMembershipChanges(t *testing.T) {
	b := newBalancer()
	b.update([]*sccv1.Member{worker("a", 0, true, false), worker("b", 0, true, false)})
	var held []*backend
	for i := 0; i < 10; i++ {
		held = append(held, b.pick(nil))
	}
	// b leaves with its 5 connections open; c joins.
	b.update([]*sccv1.Member{worker("a", 0, true, false), worker("c", 0, true, false)})
	for _, h := range held {
		if h.id == "b" {
			b.done(h) // closes after b left: touches nothing routable
		}
	}
	ws := map[string]Worker{}
	for _, w := range b.snapshot() {
		ws[w.ID] = w
	}
	if ws["a"].Estimate != 5 || ws["a"].Live != 5 || ws["c"].Estimate != 0 {
		t.Fatalf("after b left: %+v", ws)
	}
	// The next 5 go to c.
	for i := 0; i < 5; i++ {
		if got := b.pick(nil); got.id != "c" {
			t.Fatalf("pick %d went to %s, want c", i, got.id)
		}
	}
	// a reports 5 (what this gateway sent): its estimate stays 5.
	b.update([]*sccv1.Member{worker("a", 5, true, false), worker("c", 5, true, false)})
	for _, w := range b.snapshot() {
		if w.Estimate != 5 {
			t.Fatalf("after a report: %+v", w)
		}
	}
	// A worker that restarts at the same id with a new address is a new
	// backend.
	old := b.backends["a"]
	b.update([]*sccv1.Member{{Id: "a", Address: "elsewhere:1", Ready: true}, worker("c", 5, true, false)})
	if b.backends["a"] == old || b.backends["a"].estimate() != 0 {
		t.Fatal("a worker at a new address kept the old one's counts")
	}
}

// A report that predates connections this gateway routed (reports reach it
// up to a second late) does not hide them: during a burst, a worker's
// stale "0" would otherwise draw every new client to it.
func TestStaleReportKeepsOwnConnections(t *testing.T) {
	b := newBalancer()
	b.update([]*sccv1.Member{worker("a", 0, true, false), worker("b", 0, true, false)})
	for i := 0; i < 20; i++ {
		b.pick(nil)
	}
	// a's report was measured before any of its 10 arrived; b's after.
	b.update([]*sccv1.Member{worker("a", 1, true, false), worker("b", 10, true, false)})
	seen := map[string]int{}
	for i := 0; i < 20; i++ {
		seen[b.pick(nil).id]++
	}
	if seen["a"] != 10 || seen["b"] != 10 {
		t.Fatalf("after a stale report from a, 20 picks: %v, want 10 each", seen)
	}
}

// With no worker routable, await waits for a view that brings one (views
// that bring none do not end the wait), gives up after its bound or when
// the request ends, and refuses at once with a negative bound.
func TestAwaitRoutable(t *testing.T) {
	b := newBalancer()
	got := make(chan *backend, 1)
	go func() { got <- b.await(context.Background(), time.Minute) }()
	b.update([]*sccv1.Member{worker("a", 0, false, false)}) // not ready: still waiting
	select {
	case w := <-got:
		t.Fatalf("await returned %v with no worker ready", w)
	case <-time.After(50 * time.Millisecond):
	}
	b.update([]*sccv1.Member{worker("a", 0, true, false)})
	select {
	case w := <-got:
		if w == nil || w.id != "a" {
			t.Fatalf("await returned %v, want a", w)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("await still waiting after a worker became ready")
	}

	b.update(nil)
	if w := b.await(context.Background(), -1); w != nil {
		t.Fatalf("negative wait: got %s", w.id)
	}
	if w := b.await(context.Background(), 20*time.Millisecond); w != nil {
		t.Fatalf("no worker for the whole wait: got %s", w.id)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if w := b.await(ctx, time.Minute); w != nil {
		t.Fatalf("request ended: got %s", w.id)
	}
}
