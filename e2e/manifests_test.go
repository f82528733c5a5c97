//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/testutil"
)

// The plain manifests, as a user applies them, changed under load.
func testManifests(t *testing.T) {
	// Removed at the end (after dumpOnFailure's report: cleanups run last
	// first), so that the operator's cluster has the node to itself.
	t.Cleanup(func() {
		if _, err := kubectlErr("delete", "-f", filepath.Join(repoRoot, "deploy", "kubernetes"), "--wait=true", "--timeout=120s"); err != nil {
			t.Logf("delete -f deploy/kubernetes: %v", err)
		}
	})
	dumpOnFailure(t, ns)
	done := waitStep(t, "kubectl apply -f deploy/kubernetes, every Deployment available")
	kubectl(t, "apply", "-f", filepath.Join(repoRoot, "deploy", "kubernetes"))
	kubectl(t, "-n", ns, "wait", "--for=condition=complete", "job/scc-bootstrap-secrets", "--timeout=120s")
	for _, d := range []string{"scc-state", "scc-broker", "scc-worker", "scc-gateway"} {
		rollout(t, ns, d)
	}
	done()
	host, port := gatewayAddr(t, ns, "scc-gateway")
	t.Logf("gateway at %s:%d", host, port)
	c := &cluster{ns: ns, prefix: "scc-"}

	t.Run("PubSubAcrossWorkers", func(t *testing.T) {
		l := testutil.StartJSLoad(t, repoRoot, host, port, 60, 6, 50)
		// Every worker has some of the subscribers: messages published
		// through one worker reach subscribers on the others.
		testutil.EventuallyNil(t, 10*time.Second, "subscribers on every worker", func() error {
			conns := c.workerConnections(t)
			if len(conns) < 2 {
				return fmt.Errorf("connections per worker: %v", conns)
			}
			for p, n := range conns {
				if n == 0 {
					return fmt.Errorf("%s has no connections: %v", p, conns)
				}
			}
			t.Logf("connections per worker: %v", conns)
			return nil
		})
		time.Sleep(3 * time.Second)
		r := l.Stop(t, time.Now())
		t.Logf("pub/sub: %v", r)
		if r.Lost != 0 || r.Duplicates != 0 || r.Owed == 0 || r.Failed != 0 || r.Reconnected != 0 {
			t.Errorf("want every acked message delivered once, none failed, no reconnects: %v", r)
		}
	})

	// The gateways' figures are on their own port (9102, in no Service),
	// not on the address clients reach.
	t.Run("GatewayMetricsOffTheClientPort", func(t *testing.T) {
		for _, p := range c.pods(t, "gateway") {
			text, err := podProxy(t, c.ns, p, 9102, "/metrics")
			if err != nil {
				t.Fatalf("%s:9102/metrics: %v", p, err)
			}
			if _, ok := metric(text, "scc_gateway_connections"); !ok {
				t.Errorf("%s:9102/metrics has no scc_gateway_connections", p)
			}
		}
		resp, err := http.Get(fmt.Sprintf("http://%s:%d/metrics", host, port))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("/metrics through the gateway Service: %s, want 404", resp.Status)
		}
	})

	t.Run("BrokerScale1To3To1", func(t *testing.T) {
		c.scale(t, "broker", 1)
		c.ringSettled(t, 1)
		l := testutil.StartJSLoad(t, repoRoot, host, port, 300, 30, 200)
		start := time.Now()
		c.scale(t, "broker", 3)
		c.ringSettled(t, 3)
		time.Sleep(3 * time.Second)
		c.scale(t, "broker", 1)
		c.ringSettled(t, 1)
		time.Sleep(2 * time.Second)
		r := l.Stop(t, start)
		t.Logf("brokers 1 -> 3 -> 1: %v", r)
		if r.Lost != 0 || r.Duplicates != 0 || r.Reconnected != 0 || r.Owed == 0 {
			t.Errorf("want 0 lost, 0 duplicated, no client disconnected: %v", r)
		}
	})

	t.Run("WorkerScale3To1", func(t *testing.T) {
		l := testutil.StartJSLoad(t, repoRoot, host, port, 300, 30, 200)
		before := c.workerConnections(t)
		sig := watchSIGTERM(t, ns, c.pods(t, "worker"))
		start := time.Now()
		c.scale(t, "worker", 1)
		c.podsGone(t, "worker", 1)
		time.Sleep(2 * time.Second)
		r := l.Stop(t, sig.since(t, start))
		t.Logf("workers 3 -> 1 (connections before: %v): %v", before, r)
		if r.Reconnected == 0 || r.NotBack != 0 || r.BackWithinMs > 5000 {
			t.Errorf("want the drained clients back and receiving within 5 s of SIGTERM: %v", r)
		}
		if r.Lost != 0 || r.Duplicates != 0 {
			t.Errorf("want 0 lost, 0 duplicated: %v", r)
		}
		c.scale(t, "worker", 3)
		rollout(t, ns, "scc-worker")
	})

	t.Run("BrokerPodDeleted", func(t *testing.T) {
		c.scale(t, "broker", 2)
		c.ringSettled(t, 2)
		l := testutil.StartJSLoad(t, repoRoot, host, port, 300, 30, 200)
		pod := "pod/" + c.pods(t, "broker")[0]
		start := time.Now()
		// Forced, as a node failure would: no drain.
		kubectl(t, "-n", ns, "delete", pod, "--grace-period=0", "--force")
		c.ringSettled(t, 2)
		recovered := time.Since(start)
		time.Sleep(3 * time.Second)
		r := l.Stop(t, start)
		t.Logf("broker pod %s force-deleted: ring whole again after %v; %v", pod, recovered.Round(10*time.Millisecond), r)
		if r.Duplicates != 0 || r.NotBack != 0 {
			t.Errorf("want no duplicates and every client receiving: %v", r)
		}
	})

	t.Run("RollingUpdate", func(t *testing.T) {
		l := testutil.StartJSLoad(t, repoRoot, host, port, 300, 30, 200)
		start := time.Now()
		kubectl(t, "-n", ns, "set", "image", "deployment/scc-broker", "scc=scc:e2e-next")
		kubectl(t, "-n", ns, "set", "image", "deployment/scc-worker", "scc=scc:e2e-next")
		rollout(t, ns, "scc-broker")
		rollout(t, ns, "scc-worker")
		c.podsGone(t, "worker", 3)
		c.podsGone(t, "broker", 2)
		c.ringSettled(t, 2)
		took := time.Since(start)
		time.Sleep(3 * time.Second)
		r := l.Stop(t, start)
		t.Logf("image scc:dev -> scc:e2e-next, brokers and workers rolled in %v: %v", took.Round(100*time.Millisecond), r)
		if r.Lost != 0 || r.Duplicates != 0 || r.NotBack != 0 {
			t.Errorf("want 0 lost and 0 duplicated for subscribed clients, all back: %v", r)
		}
	})
}

// cluster reads and changes one SocketCluster installation.
type cluster struct {
	ns       string
	prefix   string // of its Deployments: "scc-" for the plain manifests, "<name>-" for a SocketCluster
	instance string // its pods' app.kubernetes.io/instance label; "" for the plain manifests
}

func rollout(t *testing.T, namespace, deploy string) {
	t.Helper()
	kubectl(t, "-n", namespace, "rollout", "status", "deployment/"+deploy, "--timeout=180s")
}

// scale sets a component's Deployment's replicas and waits for the rollout.
func (c *cluster) scale(t *testing.T, comp string, n int) {
	t.Helper()
	kubectl(t, "-n", c.ns, "scale", "deployment/"+c.prefix+comp, fmt.Sprint("--replicas=", n))
	rollout(t, c.ns, c.prefix+comp)
}

// selector selects a component's pods ("worker", "broker", ...).
func (c *cluster) selector(comp string) string {
	s := "app.kubernetes.io/name=scc-" + comp
	if c.instance != "" {
		s += ",app.kubernetes.io/instance=" + c.instance
	}
	return s
}

// pods lists the names of a component's pods, terminating ones included.
func (c *cluster) pods(t *testing.T, comp string) []string {
	out := kubectl(t, "-n", c.ns, "get", "pods", "-l", c.selector(comp), "-o", "name")
	var names []string
	for _, p := range strings.Fields(out) {
		names = append(names, strings.TrimPrefix(p, "pod/"))
	}
	return names
}

// podsGone waits until only n of a component's pods are left (drained
// ones have exited).
func (c *cluster) podsGone(t *testing.T, comp string, n int) {
	t.Helper()
	testutil.EventuallyNil(t, 90*time.Second, comp+" pods gone", func() error {
		if p := c.pods(t, comp); len(p) != n {
			return fmt.Errorf("%d pods: %v", len(p), p)
		}
		return nil
	})
}

// workerConnections is each worker pod's live connection count.
func (c *cluster) workerConnections(t *testing.T) map[string]int {
	conns := map[string]int{}
	for _, p := range c.pods(t, "worker") {
		text, err := podProxy(t, c.ns, p, 8000, "/metrics")
		if err != nil {
			continue
		}
		if v, ok := metric(text, "scc_worker_connections"); ok {
			conns[p] = int(v)
		}
	}
	return conns
}

// ringSettled waits until state has n brokers and no migration running.
func (c *cluster) ringSettled(t *testing.T, n int) {
	t.Helper()
	testutil.EventuallyNil(t, 90*time.Second, fmt.Sprintf("ring of %d brokers settled", n), func() error {
		pods := c.pods(t, "state")
		if len(pods) != 1 {
			return fmt.Errorf("state pods: %v", pods)
		}
		text, err := podProxy(t, c.ns, pods[0], 9001, "/metrics")
		if err != nil {
			return err
		}
		brokers, _ := metric(text, `scc_state_members{role="broker"}`)
		started, _ := metric(text, "scc_state_migrations_started_total")
		finished, _ := metric(text, "scc_state_migrations_finished_total")
		if int(brokers) != n || started != finished {
			return fmt.Errorf("%v brokers, migrations %v started, %v finished", brokers, started, finished)
		}
		return nil
	})
}
