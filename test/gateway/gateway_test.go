// Package gateway_test drives the ingress gateway in front of a whole
// cluster (state, brokers, workers on loopback): routing by load, the
// edge's limits and bad input, forwarding headers, and drains.
package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/scc-k8s/scc/internal/clustertest"
	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/pkg/client"
	gateway "github.com/scc-k8s/scc/services/ingress-gw"
	"github.com/scc-k8s/scc/services/worker"
)

// dialMany opens n clients to url, concurrently, and returns them.
func dialMany(t *testing.T, url string, n int) []*client.Client {
	t.Helper()
	return dialManyWith(t, url, n, nil)
}

// dialManyWith is dialMany with a dialer of the test's (nil: the default).
func dialManyWith(t *testing.T, url string, n int, d *websocket.Dialer) []*client.Client {
	t.Helper()
	out := make([]*client.Client, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	for i := range out {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := client.Dial(ctx, client.Options{URL: url, NoReconnect: true, Dialer: d})
			if err != nil {
				errs <- err
				return
			}
			out[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, c := range out {
			c.Close()
		}
	})
	return out
}

func counts(c *clustertest.Cluster) []int {
	var out []int
	for _, w := range c.Workers {
		out = append(out, w.Server.Clients())
	}
	return out
}

// TestLoadSpreads: 1,000 connections over 3 workers land within 10% of
// even; after a fourth worker joins, the next 1,000 go mostly to it.
func TestLoadSpreads(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 1, Workers: 3})
	g := c.AddGateway(gateway.Config{})
	c.WaitRoutable(3)

	dialMany(t, g.URL, 1000)
	got := counts(c)
	t.Logf("1,000 connections over 3 workers: %v, carried on %d tunnel sessions", got, g.TunnelSessions())
	if n := g.TunnelSessions(); runtime.GOOS == "linux" && (n < 3 || n > 3*runtime.GOMAXPROCS(0)) {
		t.Errorf("%d tunnel sessions to 3 workers, want one to three per relay loop", n)
	}
	for i, n := range got {
		if n < 300 || n > 367 { // 333 +- 10%
			t.Errorf("worker %d has %d connections, not within 10%% of 333", i+1, n)
		}
	}

	c.AddWorker()
	c.WaitStable(1)
	c.WaitRoutable(4)
	before := counts(c)
	dialMany(t, g.URL, 1000)
	after := counts(c)
	var added []int
	for i := range after {
		prev := 0
		if i < len(before) {
			prev = before[i]
		}
		added = append(added, after[i]-prev)
	}
	t.Logf("the next 1,000 after a fourth worker joined: %v (totals %v)", added, after)
	newShare := added[3]
	for i := 0; i < 3; i++ {
		if newShare <= added[i] {
			t.Errorf("the new worker got %d of the next 1,000, worker %d got %d", newShare, i+1, added[i])
		}
	}
	if newShare < 400 {
		t.Errorf("the new worker got %d of the next 1,000, want most of them (>= 400; 500 evens all four)", newShare)
	}
}

// TestNoRoutingToDrainingWorker: a draining worker gets no new
// connection from the moment it starts draining.
func TestNoRoutingToDrainingWorker(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 1, Workers: 2,
		Worker: worker.Config{DrainRate: 20}})
	g := c.AddGateway(gateway.Config{})
	c.WaitRoutable(2)
	w := c.Workers[0]
	held := dialMany(t, w.URL, 40) // its drain takes 2 s at 20 closes/s
	go c.DrainWorker(w, 5*time.Second)
	start := time.Now()
	for {
		draining := false
		for _, x := range g.Workers() {
			draining = draining || (x.ID == w.ID && x.Draining)
		}
		if draining {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatal("the gateway did not see the worker draining within a second")
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("gateway stopped routing to the worker after %v", time.Since(start).Round(time.Millisecond))
	dialMany(t, g.URL, 100)
	if n := w.Server.Clients(); n > len(held) {
		t.Fatalf("the draining worker got %d new connections", n-len(held))
	}
	if w.Server.Clients() == 0 {
		t.Fatal("the drain was over before the connections were made: the test proved nothing")
	}
}

func TestMetricsAndHealth(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 1, Workers: 1})
	g := c.AddGateway(gateway.Config{})
	c.WaitRoutable(1)
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(fmt.Sprintf("http://%s%s", g.Addr(), p))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}
}

// TestSlowClientHoldsOnlyItself: clients sharing a tunnel session with a
// client that stops reading keep receiving everything: the stalled
// client's window holds back its own stream, not the session. The same
// for clients over TLS, whose bytes goroutines move.
func TestSlowClientHoldsOnlyItself(t *testing.T) {
	t.Run("plain", func(t *testing.T) { slowClientHoldsOnlyItself(t, false) })
	t.Run("tls", func(t *testing.T) { slowClientHoldsOnlyItself(t, true) })
}

func slowClientHoldsOnlyItself(t *testing.T, secure bool) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 1, Workers: 1,
		Worker: worker.Config{MaxPendingBytes: 64 << 20}})
	var gcfg gateway.Config
	var d *websocket.Dialer
	if secure {
		d = serveTLS(t, &gcfg)
	}
	g := c.AddGateway(gcfg)
	c.WaitRoutable(1)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	release := make(chan struct{})
	defer close(release)
	slow := dialManyWith(t, g.URL, 1, d)[0]
	if err := slow.Subscribe(ctx, "news", func(string, json.RawMessage) { <-release }); err != nil {
		t.Fatal(err)
	}
	const msgs = 1500 // 12 MB of 8 KiB messages: past the stream's window and every socket buffer
	fast := dialManyWith(t, g.URL, 10, d)
	var got [10]atomic.Int64
	for i, cl := range fast {
		if err := cl.Subscribe(ctx, "news", func(string, json.RawMessage) { got[i].Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	// 12 MB to 11 subscribers: on a machine shared with other test
	// packages this can outlast the default 10 s ack timeout, which is
	// not what this test is about.
	pub, err := client.Dial(ctx, client.Options{URL: c.Workers[0].URL, NoReconnect: true, AckTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	payload, _ := json.Marshal(strings.Repeat("x", 8<<10))
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	for range msgs {
		wg.Add(1)
		pub.PublishAsync("news", payload, func(err error) {
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
			wg.Done()
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d publishes failed, the first with %v", n, firstErr.Load())
	}
	for {
		done := 0
		for i := range got {
			if got[i].Load() == msgs {
				done++
			}
		}
		if done == len(got) {
			break
		}
		if ctx.Err() != nil {
			var counts []int64
			for i := range got {
				counts = append(counts, got[i].Load())
			}
			t.Fatalf("clients sharing the session with a stalled one received %v of %d", counts, msgs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := slow.Status(); s.ID == "" {
		t.Error("the stalled client was disconnected; it should only be held back")
	}
	if g.TunnelSessions() == 0 {
		t.Error("no tunnel session carried the clients")
	}
	t.Logf("10 clients received all %d messages past a stalled one, over %d tunnel sessions", msgs, g.TunnelSessions())
}

// A gateway with no worker to route to (it has just started, or every
// worker is unready) holds a new client for up to NoWorkerWait until one
// comes, instead of refusing it into its reconnect backoff; with a
// negative wait it refuses at once.
func TestUpgradeWaitsForAWorker(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 1})
	g := c.AddGateway(gateway.Config{})
	refusing := c.AddGateway(gateway.Config{NoWorkerWait: -1})
	if _, err := client.Dial(t.Context(), client.Options{URL: refusing.URL, NoReconnect: true}); err == nil {
		t.Fatal("a gateway told not to wait served a client with no worker")
	}
	dialed := make(chan error, 1)
	go func() {
		cl, err := client.Dial(t.Context(), client.Options{URL: g.URL, NoReconnect: true})
		if err == nil {
			cl.Close()
		}
		dialed <- err
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-dialed:
		t.Fatalf("the client's connect ended before any worker existed: %v", err)
	default:
	}
	c.AddWorker()
	if err := <-dialed; err != nil {
		t.Fatalf("a client held for a worker: %v", err)
	}
}

// TestGatewaysSharePort: two gateways with ReusePort serve one address,
// each taking a share of its connections and showing its own figures on
// its HTTPListen (and only there); once one has stopped, the other takes
// every new connection. Without ReusePort a second gateway cannot have
// the address.
func TestGatewaysSharePort(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 1, Workers: 1})
	shared := fmt.Sprint("127.0.0.1:", testutil.FreePort(t))
	var gws []*clustertest.Gateway
	var admin []string
	for range 2 {
		a := fmt.Sprint("127.0.0.1:", testutil.FreePort(t))
		admin = append(admin, a)
		gws = append(gws, c.AddGateway(gateway.Config{Listen: shared, ReusePort: true, HTTPListen: a}))
	}
	if g, err := gateway.Start(gateway.Config{Listen: shared, StateAddr: c.StateAddr, GRPC: c.GRPC}); err == nil {
		g.Shutdown()
		t.Fatal("a gateway without ReusePort got an address two others share")
	}
	c.WaitRoutable(1)
	testutil.WaitHTTP(t, "http://"+admin[0]+"/readyz")
	testutil.WaitHTTP(t, "http://"+admin[1]+"/readyz")
	conns := func(i int) float64 {
		const series = "scc_gateway_connections"
		return testutil.MustScrape(t, "http://"+admin[i]+"/metrics", series)[series]
	}

	// The figures are on HTTPListen only: the shared address, the one the
	// internet reaches, answers /metrics with 404 (it neither serves nor
	// proxies them to a worker) and the probes as before.
	for path, want := range map[string]int{"/metrics": http.StatusNotFound, "/readyz": http.StatusOK, "/healthz": http.StatusOK} {
		resp, err := http.Get("http://" + shared + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s on the shared address: %d, want %d", path, resp.StatusCode, want)
		}
	}

	url := gws[0].URL // the shared address
	dialMany(t, url, 40)
	waitFor(t, "40 connections over the two gateways", func() bool { return conns(0)+conns(1) == 40 })
	if conns(0) == 0 || conns(1) == 0 {
		t.Fatalf("one gateway took all 40 connections (%v, %v)", conns(0), conns(1))
	}

	kept := conns(1)
	gws[0].Shutdown()    // its clients told to go; NoReconnect: they do not come back
	dialMany(t, url, 30) // fails the test if one is refused
	waitFor(t, "the 30 new connections at the gateway left", func() bool { return conns(1) == kept+30 })
}
