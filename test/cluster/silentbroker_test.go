package cluster_test

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/clustertest"
	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/services/worker/cluster"
)

// A broker that goes silent for every worker at once (paused, or its own
// network gone) is not a cut of any one worker's: no worker may hand its
// clients over, since the others cannot take them. Workers tell the two
// apart by the others' readiness, so every worker must notice the silence
// and report it within the partition margin of the first. Idle workers are
// the hard case (under load they hear from the broker all the time): each
// last heard from it at its latest sync, so the sync interval is what
// spreads their noticing. The workers start 45 ms apart, and each
// round's broker comes back to them 70 ms apart, so that their syncs are
// out of phase as in a real cluster (links that come up together sync
// together); three rounds of an idle cluster. The return 70 ms apart also
// has the last worker see the first ready while its own link is still
// down: it must give its link time to come back before it takes that for
// a cut of its own.
func TestSilentBrokerNotTakenForCut(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 2})
	silent := c.Brokers[0].Addr().String()
	var handovers atomic.Int64
	const workers = 3
	paths := make([]*holdPath, workers)
	for i := range workers {
		path := newHoldPath()
		paths[i] = path
		c.AddWorkerWith(func(lc *cluster.Config) {
			lc.LinkTimeout = 2 * time.Second // syncs and margin stay the defaults
			lc.OnPartition = func() { handovers.Add(1) }
			lc.GRPC.Dialer = func(ctx context.Context, addr string) (net.Conn, error) {
				conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				if err != nil || addr != silent { // state and the other broker: as they are
					return conn, err
				}
				return heldConn{conn, path}, nil
			}
		})
		time.Sleep(45 * time.Millisecond)
	}
	c.WaitStable(2)
	allReady := func() {
		testutil.EventuallyNil(t, 10*time.Second, "every worker ready", func() error {
			for _, w := range c.Workers {
				if !w.Cluster.Ready() {
					return fmt.Errorf("%s not ready", w.ID)
				}
			}
			return nil
		})
	}
	allReady()
	restore := func() {
		for _, p := range paths {
			p.set(false)
			time.Sleep(70 * time.Millisecond)
		}
	}
	defer restore()
	for round := range 3 {
		for _, p := range paths {
			p.set(true)
		}
		start := time.Now()
		var first, last time.Duration
		noticed := map[string]bool{}
		testutil.Eventually(t, 10*time.Second, func() bool {
			for _, w := range c.Workers {
				if !noticed[w.ID] && !w.Cluster.Ready() {
					noticed[w.ID] = true
					last = time.Since(start)
					if first == 0 {
						first = last
					}
				}
			}
			return len(noticed) == workers
		}, "every worker noticed the silent broker")
		time.Sleep(time.Second) // past the margin of the last to notice
		if n := handovers.Load(); n != 0 {
			t.Fatalf("round %d (or the broker's return before it): %d workers handed their clients over for a broker every worker lost", round, n)
		}
		t.Logf("round %d: the %d workers noticed %v to %v after the broker went silent; none handed over", round, workers,
			first.Round(time.Millisecond), last.Round(time.Millisecond))
		restore()
		allReady()
	}
}
