package cluster_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/clustertest"
	"github.com/scc-k8s/scc/services/worker/cluster"
)

// laggingConn delays every read: what a broker sends this worker arrives
// late (a slow network, a busy worker), so at any moment some deliveries
// are still on their way.
type laggingConn struct {
	net.Conn
	delay time.Duration
	on    *atomic.Bool
}

func (c laggingConn) Read(p []byte) (int, error) {
	if c.on.Load() {
		time.Sleep(c.delay)
	}
	return c.Conn.Read(p)
}

// A broker is drained while one worker's links to the brokers lag: the
// worker must not let go of the old owner before everything the old owner
// accepted (and acknowledged to its publishers) has reached it. 0 lost.
func TestDrainWithLaggingWorker(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 3, Workers: 2})
	stateAddr := c.StateAddr
	var lag atomic.Bool // on once the load runs: subscribing goes at full speed
	c.AddWorkerWith(func(lc *cluster.Config) {
		lc.GRPC.Dialer = func(ctx context.Context, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil || addr == stateAddr {
				return conn, err
			}
			return laggingConn{conn, 150 * time.Millisecond, &lag}, nil
		}
	})
	c.WaitStable(3)
	// The lagging worker only subscribes: with no publishes of its own to
	// wait for, nothing else holds back its acks of the migration phases.
	l := startLoad(t, c, loadConfig{Channels: 300, SubsPerWorker: 2, PubsPerWorker: 1, Rate: 1000, Publishers: 2})
	lag.Store(true)
	time.Sleep(700 * time.Millisecond)
	for range 2 {
		c.DrainBroker(c.Brokers[0])
		c.WaitStable(len(c.Brokers))
		time.Sleep(300 * time.Millisecond)
		c.AddBroker()
		c.WaitStable(len(c.Brokers))
		time.Sleep(300 * time.Millisecond)
	}
	sent, acked, failed, missing, dups, reordered := l.finish()
	t.Logf("lagging worker: %d sent, %d acked, %d failed, %d deliveries; missing %d, duplicates %d, out of order %d",
		sent, acked, failed, l.delivered(), missing, dups, reordered)
	if failed > 0 || missing > 0 || dups > 0 || acked == 0 {
		t.Fatalf("lost or doubled: %d failed, %d missing, %d duplicates", failed, missing, dups)
	}
}
