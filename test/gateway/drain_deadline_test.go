package gateway_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scc-k8s/scc/internal/clustertest"
	"github.com/scc-k8s/scc/pkg/client"
	gateway "github.com/scc-k8s/scc/services/ingress-gw"
	"github.com/scc-k8s/scc/services/worker"
)

// TestGatewayDrainDeadline: a stopping gateway whose workers close its
// clients too slowly for its drain deadline (one a second) tells the
// clients left at the deadline itself to come back at once: close code
// 4000, "gateway draining", not a connection that just ends (on which the
// official client waits out its backoff). Over every way the gateway
// carries a client: tunnel sessions or a socket per client, plain or TLS.
func TestGatewayDrainDeadline(t *testing.T) {
	for _, tc := range carriers {
		t.Run(tc.name, func(t *testing.T) { drainDeadline(t, tc.tunnels, tc.secure) })
	}
}

func drainDeadline(t *testing.T, tunnels, secure bool) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 1, Workers: 1, Worker: worker.Config{DrainRate: 1}})
	reg := prometheus.NewRegistry()
	cfg := gateway.Config{DrainTimeout: 500 * time.Millisecond, DisableTunnels: !tunnels, Registerer: reg}
	var dialer *websocket.Dialer
	if secure {
		dialer = serveTLS(t, &cfg)
	}
	g := c.AddGateway(cfg)
	c.WaitRoutable(1)

	const n = 20
	var (
		mu      sync.Mutex
		reasons = map[string]int{} // "code reason" of each client's first close
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range n {
		cl, err := client.Dial(ctx, client.Options{URL: g.URL, Dialer: dialer, ReconnectDelay: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		cl.OnDisconnect(func(ce *client.CloseError) {
			once.Do(func() {
				mu.Lock()
				reasons[ce.Error()]++
				mu.Unlock()
			})
		})
		if err := cl.Subscribe(ctx, "news", func(string, json.RawMessage) {}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
	}
	// A few messages have gone by: the worker's streams to the clients
	// are between two frames, not at their start.
	pub, err := client.Dial(ctx, client.Options{URL: g.URL, Dialer: dialer, NoReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := pub.Publish(ctx, "news", "before the drain"); err != nil {
			t.Fatal(err)
		}
	}
	pub.Close()

	start := time.Now()
	g.Shutdown()
	took := time.Since(start)
	waitFor(t, "every client closed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		sum := 0
		for _, k := range reasons {
			sum += k
		}
		return sum == n
	})
	mu.Lock()
	defer mu.Unlock()
	byGateway := reasons["client: closed with 4000 gateway draining"]
	byWorker := reasons["client: closed with 4000 server draining"]
	if byGateway+byWorker != n || byGateway == 0 {
		t.Fatalf("closes %v: want every one 4000, most of them from the gateway at its deadline", reasons)
	}
	told := gathered(t, reg, "scc_gateway_drain_deadline_closes_total", "told")
	cut := gathered(t, reg, "scc_gateway_drain_deadline_closes_total", "cut")
	if told != float64(byGateway) || cut != 0 {
		t.Errorf("drain deadline closes: told %v, cut %v; want %d told, none cut", told, cut, byGateway)
	}
	t.Logf("drained in %v: %d clients closed by the worker, %d told by the gateway at its deadline", took.Round(time.Millisecond), byWorker, byGateway)
}

// gathered is a counter's value with the given label value in reg (0 when
// it has no such series).
func gathered(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
