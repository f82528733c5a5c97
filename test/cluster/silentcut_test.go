package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/clustertest"
	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/pkg/client"
	"github.com/scc-k8s/scc/services/broker"
	"github.com/scc-k8s/scc/services/worker/cluster"
)

// holdPath is the network between one worker and the brokers, cut
// silently when told: connections stay open and nothing moves either way
// (reads and writes wait, a close waits too) until it is restored, when
// everything held goes on in order.
type holdPath struct {
	mu   sync.Mutex
	cut  bool
	wake *sync.Cond
}

func newHoldPath() *holdPath {
	p := &holdPath{}
	p.wake = sync.NewCond(&p.mu)
	return p
}

func (p *holdPath) set(cut bool) {
	p.mu.Lock()
	p.cut = cut
	p.wake.Broadcast()
	p.mu.Unlock()
}

func (p *holdPath) hold() {
	p.mu.Lock()
	for p.cut {
		p.wake.Wait()
	}
	p.mu.Unlock()
}

type heldConn struct {
	net.Conn
	p *holdPath
}

func (c heldConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.p.hold() // what arrived during the cut is handed over after it
	return n, err
}

func (c heldConn) Write(b []byte) (int, error) {
	c.p.hold()
	return c.Conn.Write(b)
}

func (c heldConn) Close() error {
	go func() { c.p.hold(); c.Conn.Close() }() // the peer hears of it after the cut
	return nil
}

// startCutCluster runs 2 brokers and 2 workers, the second behind path,
// with its link timeout at 1 s and no partition handover (its clients
// stay whatever happens): the load publishes through the first worker to
// subscribers on both.
func startCutCluster(t *testing.T, brokerCfg broker.Config) (*clustertest.Cluster, *holdPath, *load) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 2, Workers: 1, Broker: brokerCfg})
	stateAddr := c.StateAddr
	path := newHoldPath()
	c.AddWorkerWith(func(lc *cluster.Config) {
		lc.LinkTimeout = time.Second
		lc.PartitionAfter = time.Minute
		lc.GRPC.Dialer = func(ctx context.Context, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil || addr == stateAddr {
				return conn, err
			}
			return heldConn{conn, path}, nil
		}
	})
	c.WaitStable(2)
	l := startLoad(t, c, loadConfig{Channels: 100, SubsPerWorker: 2, PubsPerWorker: 2, Rate: 2000, Publishers: 1})
	time.Sleep(500 * time.Millisecond)
	return c, path, l
}

// relinked waits until each broker has one link per worker and holds
// nothing for a lost one: the cut worker's new links replaced the old.
func relinked(t *testing.T, c *clustertest.Cluster, within time.Duration) {
	t.Helper()
	testutil.EventuallyNil(t, within, "one link per worker at each broker, none held", func() error {
		for _, b := range c.Brokers {
			if n, h := b.Server().Links(), b.Server().HeldWorkers(); n != 2 || h != 0 {
				return fmt.Errorf("%s has %d links and holds %d lost ones", b.ID(), n, h)
			}
		}
		return nil
	})
}

// A worker's path to the brokers is cut silently and restored after the
// worker noticed (before the brokers would). The worker ends its silent
// links and dials again; the ends reach the brokers only as the path
// heals, and the brokers hold the worker's subscriptions until its new
// links have subscribed again: every publish they acknowledged reached
// the worker's subscribers (those that could not are failed to their
// publishers), and nothing arrived twice.
func TestSilentCutRestored(t *testing.T) {
	c, path, l := startCutCluster(t, broker.Config{})
	for range 3 {
		path.set(true)
		t.Logf("cut at %s", time.Now().Format("15:04:05.000"))
		time.Sleep(1800 * time.Millisecond) // the worker notices after 1-1.5 s
		path.set(false)
		t.Logf("restored at %s", time.Now().Format("15:04:05.000"))
		relinked(t, c, 2*time.Second)
		time.Sleep(time.Second)
	}
	finishCut(t, l, "3 silent cuts")
}

// finishCut ends the load and checks that every acknowledged publish
// reached every subscriber once; it returns how many publishes failed.
func finishCut(t *testing.T, l *load, what string) (failed int) {
	t.Helper()
	sent, acked, failed, missing, dups, reordered := l.finish()
	for i, m := range l.misses() {
		if i == 5 {
			break
		}
		m.pub.mu.Lock()
		t.Logf("missed: publisher %d seq %d on %s (sent %s, acked %s) by a subscriber on worker %d",
			m.pub.id, m.seq, m.ch, m.sentAt.Format("15:04:05.000"), m.pub.ackAt[m.seq].Format("15:04:05.000"), m.sub.worker)
		m.pub.mu.Unlock()
	}
	t.Logf("%s: %d sent, %d acked, %d failed, %d deliveries; missing %d, duplicates %d, out of order %d",
		what, sent, acked, failed, l.delivered(), missing, dups, reordered)
	if missing > 0 || dups > 0 || acked == 0 {
		t.Fatalf("acked but not delivered: %d; duplicates %d; acked %d", missing, dups, acked)
	}
	return failed
}

// The cut outlasts the brokers' patience too (their link timeout, 1.5 s
// here), and the worker keeps its clients (it would hand them to the
// other worker; here it is slow to). The brokers hold its subscriptions
// once they cut it: what is published to its channels fails until it is
// back, and nothing acknowledged misses its subscribers.
func TestSilentCutOutlastsBroker(t *testing.T) {
	c, path, l := startCutCluster(t, broker.Config{LinkTimeout: 1500 * time.Millisecond})
	path.set(true)
	time.Sleep(3500 * time.Millisecond)
	path.set(false)
	relinked(t, c, 3*time.Second)
	time.Sleep(time.Second)
	if finishCut(t, l, "a 3.5 s silent cut") == 0 {
		t.Fatal("nothing failed: the cut worker's channels were acknowledged without it")
	}
}

// The cut lasts, and the cut-off worker hands its clients over (as the
// service does once another worker is ready). It reports the links it
// lost through state: the brokers drop them and let go of what they held
// for them once it reports itself without clients, long before their own
// link timeout (10 s here) would have told them anything; publishes to
// its former channels are then acknowledged again.
func TestSilentCutHandedOver(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 2, Workers: 1, Broker: broker.Config{LinkTimeout: 10 * time.Second}})
	stateAddr := c.StateAddr
	path := newHoldPath()
	var cut atomic.Pointer[clustertest.Worker]
	w := c.AddWorkerWith(func(lc *cluster.Config) {
		lc.LinkTimeout = time.Second
		lc.PartitionAfter = 200 * time.Millisecond
		lc.OnPartition = func() {
			if w := cut.Load(); w != nil {
				w.Server.DrainClients("cut off from a broker")
			}
		}
		lc.GRPC.Dialer = func(ctx context.Context, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil || addr == stateAddr {
				return conn, err
			}
			return heldConn{conn, path}, nil
		}
	})
	cut.Store(w)
	c.WaitStable(2)

	sub, err := client.Dial(t.Context(), client.Options{URL: w.URL, NoReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	channels := make([]string, 20) // on both brokers
	for i := range channels {
		channels[i] = fmt.Sprint("handed-", i)
		if err := sub.Subscribe(t.Context(), channels[i], func(string, json.RawMessage) {}); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := client.Dial(t.Context(), client.Options{URL: c.Workers[0].URL, NoReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	path.set(true)
	defer path.set(false)
	start := time.Now()
	testutil.EventuallyNil(t, 8*time.Second, "the brokers gave up the cut worker's links and hold nothing", func() error {
		for _, b := range c.Brokers {
			if n, h := b.Server().Links(), b.Server().HeldWorkers(); n != 1 || h != 0 {
				return fmt.Errorf("%s has %d links and holds %d lost ones", b.ID(), n, h)
			}
		}
		return nil
	})
	t.Logf("the brokers let the cut worker's links go %v after the cut (their own timeout: 10 s)", time.Since(start).Round(10*time.Millisecond))
	if w.Server.Clients() != 0 {
		t.Fatalf("the cut worker still has %d clients", w.Server.Clients())
	}
	for _, ch := range channels {
		if err := pub.Publish(t.Context(), ch, "after"); err != nil {
			t.Fatalf("publish to %s once the cut worker's clients were gone: %v", ch, err)
		}
	}
	path.set(false)
	relinked(t, c, 5*time.Second)
}
