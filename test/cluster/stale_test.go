package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/clustertest"
	"github.com/scc-k8s/scc/proto/sccv1"
	"github.com/scc-k8s/scc/services/worker/cluster"
)

// cutter dials normally until cut, then refuses the one address (state)
// and closes what it had opened to it: a worker that lost state but not
// its brokers.
type cutter struct {
	addr  string
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (c *cutter) dial(ctx context.Context, addr string) (net.Conn, error) {
	if addr != c.addr {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return nil, errors.New("cut")
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

func (c *cutter) cutNow() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = true
	for _, conn := range c.conns {
		conn.Close()
	}
}

// A worker that lost state keeps routing by its last ring. When the ring
// changes without it, the brokers refuse what it routes to a channel they
// no longer own (epoch fencing): its publishers get an error, and no
// publish is acknowledged that then misses subscribers on other workers.
func TestStaleWorkerFenced(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 2, Workers: 1,
		Link: cluster.Config{BufferTimeout: 500 * time.Millisecond}})
	cut := &cutter{addr: c.StateAddr}
	stale := c.AddWorkerWith(func(lc *cluster.Config) { lc.GRPC.Dialer = cut.dial })
	c.WaitStable(2)

	const n = 200
	sub := dial(t, c.Workers[0].URL)
	var mu sync.Mutex
	got := map[string]int{}
	for i := range n {
		ch := fmt.Sprint("fence-", i)
		if err := sub.Subscribe(t.Context(), ch, func(ch string, _ json.RawMessage) { mu.Lock(); got[ch]++; mu.Unlock() }); err != nil {
			t.Fatal(err)
		}
	}
	pub := dial(t, stale.URL)

	cut.cutNow()
	waitView(t, c, func(v *sccv1.ClusterView) bool { return len(v.Workers) == 1 }, "state to drop the cut worker")
	c.AddBroker()
	waitView(t, c, func(v *sccv1.ClusterView) bool {
		return v.Phase == sccv1.Phase_PHASE_STABLE && len(v.Brokers) == 3
	}, "a stable ring of 3 brokers")
	if e, _ := stale.Cluster.Epoch(); e == c.State.Server().View().Epoch {
		t.Fatal("the cut worker followed the ring change")
	}

	var acked, refused atomic.Int64
	var wg sync.WaitGroup
	ackedChans := make([]string, 0, n)
	var amu sync.Mutex
	for i := range n {
		ch := fmt.Sprint("fence-", i)
		wg.Add(1)
		pub.PublishAsync(ch, json.RawMessage("1"), func(err error) {
			defer wg.Done()
			if err != nil {
				refused.Add(1)
				return
			}
			acked.Add(1)
			amu.Lock()
			ackedChans = append(ackedChans, ch)
			amu.Unlock()
		})
	}
	wg.Wait()
	t.Logf("stale worker: %d publishes acked, %d refused", acked.Load(), refused.Load())
	deadline := time.Now().Add(5 * time.Second)
	for {
		missing := 0
		mu.Lock()
		for _, ch := range ackedChans {
			if got[ch] == 0 {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d acked publishes never reached the subscriber on the other worker", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if refused.Load() == 0 {
		t.Fatal("no publish was refused: the ring change moved no channel?")
	}
}

func waitView(t *testing.T, c *clustertest.Cluster, ok func(*sccv1.ClusterView) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok(c.State.Server().View()) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
