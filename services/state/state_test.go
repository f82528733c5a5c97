package state_test

import (
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/pkg/grpcx"
	"github.com/scc-k8s/scc/pkg/member"
	"github.com/scc-k8s/scc/proto/sccv1"
	"github.com/scc-k8s/scc/services/state"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func startState(t *testing.T, addr string, cfg state.Config) *state.Node {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = quiet
	n, err := state.Start(state.ServiceConfig{Listener: ln, State: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n
}

// fakeMember joins like a broker or worker and records the views it gets.
type fakeMember struct {
	c    *member.Client
	mu   sync.Mutex
	last *sccv1.ClusterView
	view *sccv1.View
}

func join(t *testing.T, addr, id string, role sccv1.Role, view *sccv1.View) *fakeMember {
	t.Helper()
	f := &fakeMember{view: view}
	c, err := member.Start(member.Config{StateAddr: addr, GRPC: grpcx.Config{}, Logger: quiet,
		Member: &sccv1.Member{Id: id, Role: role, Address: id + ":1"},
		View: func() *sccv1.View {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.view
		},
		OnView: func(v *sccv1.ClusterView) { f.mu.Lock(); f.last = v; f.mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	f.c = c
	t.Cleanup(c.Close)
	return f
}

func (f *fakeMember) get() *sccv1.ClusterView {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

func eventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, cond, msg)
}

func TestMigrationWaitsForEveryWorker(t *testing.T) {
	n := startState(t, "", state.Config{SettleWindow: -1, Debounce: 10 * time.Millisecond})
	addr := n.Addr().String()
	join(t, addr, "b1", sccv1.Role_ROLE_BROKER, nil)
	w1 := join(t, addr, "w1", sccv1.Role_ROLE_WORKER, nil)
	w2 := join(t, addr, "w2", sccv1.Role_ROLE_WORKER, nil)
	eventually(t, func() bool { e, p := n.Server().Epoch(); return e == 1 && p == sccv1.Phase_PHASE_STABLE }, "first ring")

	join(t, addr, "b2", sccv1.Role_ROLE_BROKER, nil)
	eventually(t, func() bool {
		v := w1.get()
		return v != nil && v.Epoch == 2 && v.Phase == sccv1.Phase_PHASE_SUBSCRIBE_BOTH
	}, "subscribe-both")
	if v := w1.get(); len(v.PrevBrokers) != 1 || len(v.Brokers) != 2 {
		t.Fatalf("view %v", v)
	}
	if !w1.c.Ack(2, sccv1.Phase_PHASE_SUBSCRIBE_BOTH) {
		t.Fatal("w1's ack did not go out")
	}
	// State has taken w1's ack (it waits for w2 alone), and that is not
	// enough to move on.
	eventually(t, func() bool { return slices.Equal(n.Server().Waiting(), []string{"w2"}) }, "w1's ack taken")
	if _, p := n.Server().Epoch(); p != sccv1.Phase_PHASE_SUBSCRIBE_BOTH {
		t.Fatalf("advanced to %v with one of two acks", p)
	}
	if !w2.c.Ack(2, sccv1.Phase_PHASE_SUBSCRIBE_BOTH) {
		t.Fatal("w2's ack did not go out")
	}
	eventually(t, func() bool { _, p := n.Server().Epoch(); return p == sccv1.Phase_PHASE_PUBLISH_NEW }, "publish-new")
	// A third broker joining now queues behind the migration.
	b3 := join(t, addr, "b3", sccv1.Role_ROLE_BROKER, nil)
	eventually(t, func() bool { return b3.get() != nil }, "b3 registered")
	time.Sleep(300 * time.Millisecond) // past the debounce (100 ms): a change would have started by now
	if e, _ := n.Server().Epoch(); e != 2 {
		t.Fatalf("a migration started during another: epoch %d", e)
	}
	for _, ph := range []sccv1.Phase{sccv1.Phase_PHASE_PUBLISH_NEW, sccv1.Phase_PHASE_RELEASE_OLD} {
		if !w1.c.Ack(2, ph) || !w2.c.Ack(2, ph) {
			t.Fatalf("an ack of %v did not go out", ph)
		}
		eventually(t, func() bool { _, p := n.Server().Epoch(); return p != ph }, "next phase")
	}
	// Epoch 2 is done; the queued change becomes epoch 3.
	eventually(t, func() bool { e, p := n.Server().Epoch(); return e == 3 && p == sccv1.Phase_PHASE_SUBSCRIBE_BOTH }, "queued migration")
	// A worker that leaves stops holding the migration up.
	w2.c.Close()
	if !w1.c.Ack(3, sccv1.Phase_PHASE_SUBSCRIBE_BOTH) {
		t.Fatal("w1's ack did not go out")
	}
	eventually(t, func() bool { _, p := n.Server().Epoch(); return p == sccv1.Phase_PHASE_PUBLISH_NEW }, "w2 gone")
}

func TestLeaseExpiry(t *testing.T) {
	n := startState(t, "", state.Config{SettleWindow: -1, Lease: 300 * time.Millisecond})
	f := join(t, n.Addr().String(), "w1", sccv1.Role_ROLE_WORKER, nil)
	eventually(t, func() bool { return len(n.Server().View().Workers) == 1 }, "joined")
	_ = f
	// Heartbeats (1 s by default) are slower than the lease: the member is
	// dropped, its stream ends, and it joins again.
	eventually(t, func() bool { return len(n.Server().View().Workers) == 0 }, "lease expired")
	eventually(t, func() bool { return len(n.Server().View().Workers) == 1 }, "joined again")
}

func TestRestartKeepsEpochs(t *testing.T) {
	n := startState(t, "", state.Config{SettleWindow: -1, Debounce: 10 * time.Millisecond})
	addr := n.Addr().String()
	join(t, addr, "b1", sccv1.Role_ROLE_BROKER, nil)
	join(t, addr, "b2", sccv1.Role_ROLE_BROKER, nil)
	// This worker reports that it applies epoch 41, mid-migration.
	w := join(t, addr, "w1", sccv1.Role_ROLE_WORKER, &sccv1.View{Epoch: 41, Phase: sccv1.Phase_PHASE_PUBLISH_NEW,
		Brokers:     []*sccv1.Member{{Id: "b1", Role: sccv1.Role_ROLE_BROKER}, {Id: "b2", Role: sccv1.Role_ROLE_BROKER}},
		PrevBrokers: []*sccv1.Member{{Id: "b1", Role: sccv1.Role_ROLE_BROKER}}})
	eventually(t, func() bool { return w.get() != nil }, "view")
	n.Stop()
	n2 := startState(t, addr, state.Config{SettleWindow: 300 * time.Millisecond, Debounce: 10 * time.Millisecond})
	eventually(t, func() bool { v := w.get(); return v != nil && v.Settling }, "settling view")
	eventually(t, func() bool { e, p := n2.Server().Epoch(); return e == 41 && p == sccv1.Phase_PHASE_PUBLISH_NEW }, "migration resumed")
	if !w.c.Ack(41, sccv1.Phase_PHASE_PUBLISH_NEW) {
		t.Fatal("the ack did not go out")
	}
	eventually(t, func() bool { _, p := n2.Server().Epoch(); return p == sccv1.Phase_PHASE_RELEASE_OLD }, "release-old")
	if !w.c.Ack(41, sccv1.Phase_PHASE_RELEASE_OLD) {
		t.Fatal("the ack did not go out")
	}
	eventually(t, func() bool { e, p := n2.Server().Epoch(); return e == 41 && p == sccv1.Phase_PHASE_STABLE }, "stable at 41")
}

// A worker's lost links, and its load reaching zero while it has some,
// go to state without waiting for a heartbeat (a minute apart here), and
// state passes them on to the brokers at once, which act on them (see the
// broker's ghost.go). Once the ring is stable nothing else would send the
// brokers a view here (leases of a minute, heartbeats a minute apart), so
// a lost link state kept to itself is never seen. (The load reaching zero
// would also reach the brokers with state's once-a-second load views; that
// state sends it at once is not told apart here.)
func TestLostLinksPassedAtOnce(t *testing.T) {
	n := startState(t, "", state.Config{SettleWindow: -1, Lease: time.Minute})
	addr := n.Addr().String()
	b := join(t, addr, "b1", sccv1.Role_ROLE_BROKER, nil)
	var mu sync.Mutex
	load, lost := uint64(3), []*sccv1.LostLink(nil)
	set := func(l uint64, ll ...*sccv1.LostLink) { mu.Lock(); load, lost = l, ll; mu.Unlock() }
	w, err := member.Start(member.Config{StateAddr: addr, Logger: quiet, HeartbeatInterval: time.Minute,
		Member:    &sccv1.Member{Id: "w1", Role: sccv1.Role_ROLE_WORKER, Address: "w1:1"},
		Load:      func() uint64 { mu.Lock(); defer mu.Unlock(); return load },
		LostLinks: func() []*sccv1.LostLink { mu.Lock(); defer mu.Unlock(); return lost }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	seen := func(load uint64, link uint64) func() bool {
		return func() bool {
			v := b.get()
			if v == nil || len(v.Workers) != 1 {
				return false
			}
			m := v.Workers[0]
			got := uint64(0)
			if len(m.LostLinks) == 1 && m.LostLinks[0].BrokerId == "b1" {
				got = m.LostLinks[0].Link
			}
			return m.Load == load && got == link && len(m.LostLinks) == min(1, int(link))
		}
	}
	eventually(t, seen(3, 0), "the worker registered with its load")
	eventually(t, func() bool { v := b.get(); return v != nil && v.Phase == sccv1.Phase_PHASE_STABLE && v.Epoch > 0 }, "a stable ring")
	set(3, &sccv1.LostLink{BrokerId: "b1", Link: 4})
	eventually(t, seen(3, 4), "the lost link passed on")
	set(0, &sccv1.LostLink{BrokerId: "b1", Link: 4})
	eventually(t, seen(0, 4), "no load left, with the lost link")
	set(0)
	eventually(t, seen(0, 0), "the lost link replaced")
}
