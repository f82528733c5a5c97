//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/testutil"
)

// The same cluster again, from a SocketCluster resource through the
// operator: created, scaled by editing the resource and through its scale
// subresource, and the least-loaded worker is the one a scale-down removes.
func testOperator(t *testing.T) {
	const demoNS, name = "scc-demo", "demo"
	sample := filepath.Join(repoRoot, "deploy", "kubernetes", "operator", "samples", "socketcluster.yaml")
	t.Cleanup(func() {
		// Nothing runs after this part: no need to wait for the namespaces.
		for _, args := range [][]string{{"delete", "-f", sample, "--wait=false"},
			{"delete", "-k", filepath.Join(repoRoot, "deploy", "kubernetes", "operator"), "--wait=false"}} {
			if _, err := kubectlErr(args...); err != nil {
				t.Logf("kubectl %s: %v", strings.Join(args, " "), err)
			}
		}
	})
	dumpOnFailure(t, demoNS)
	dumpOnFailure(t, "scc-system")
	done := waitStep(t, "kubectl apply -k deploy/kubernetes/operator, the sample SocketCluster available")
	kubectl(t, "apply", "-k", filepath.Join(repoRoot, "deploy", "kubernetes", "operator"))
	rollout(t, "scc-system", "scc-operator")
	kubectl(t, "apply", "-f", sample)
	kubectl(t, "-n", demoNS, "wait", "--for=condition=Available", "socketcluster/"+name, "--timeout=180s")
	c := &cluster{ns: demoNS, prefix: name + "-", instance: name}
	for _, comp := range []string{"state", "broker", "worker", "gateway"} {
		rollout(t, demoNS, name+"-"+comp)
	}
	done()
	host, port := gatewayAddr(t, demoNS, name+"-gateway")

	t.Run("PubSub", func(t *testing.T) {
		l := testutil.StartJSLoad(t, repoRoot, host, port, 60, 6, 50)
		time.Sleep(3 * time.Second)
		r := l.Stop(t, time.Now())
		t.Logf("pub/sub through %s-gateway: %v", name, r)
		if r.Lost != 0 || r.Duplicates != 0 || r.Owed == 0 || r.Reconnected != 0 {
			t.Errorf("want every acked message delivered once: %v", r)
		}
	})

	t.Run("ScaleByEditingTheResource", func(t *testing.T) {
		kubectl(t, "-n", demoNS, "patch", "socketcluster", name, "--type=merge", "-p", `{"spec":{"workers":{"replicas":4}}}`)
		c.waitWorkers(t, name, 4)
	})

	t.Run("ScaleSubresourceRemovesTheLeastLoaded", func(t *testing.T) {
		if os.Getenv("SCC_E2E_UPLINK") == "" {
			t.Skip("loads each worker by its pod address: only on our own node")
		}
		// An old worker gets the fewest clients: everyone connects through
		// the gateway, then more connect straight to the three others.
		pods := c.podsByAge(t, "worker")
		if len(pods) != 4 {
			t.Fatalf("worker pods: %v", pods)
		}
		light := pods[0].name
		l := testutil.StartJSLoad(t, repoRoot, host, port, 40, 4, 10)
		for _, p := range pods[1:] {
			testutil.StartJSLoad(t, repoRoot, p.ip, 8000, 20, 2, 0)
		}
		conns := c.workerConnections(t)
		t.Logf("connections per worker before the scale-down: %v; the lightest by design: %s", conns, light)
		for p, n := range conns {
			if p != light && n <= conns[light] {
				t.Fatalf("%s has %d connections, not more than %s's %d", p, n, light, conns[light])
			}
		}
		var names []string
		for _, p := range pods {
			names = append(names, p.name)
		}
		sig := watchSIGTERM(t, demoNS, names)
		start := time.Now()
		kubectl(t, "-n", demoNS, "scale", "socketcluster/"+name, "--replicas=3")
		c.waitWorkers(t, name, 3)
		left := c.pods(t, "worker")
		var costs []string
		for _, p := range left {
			costs = append(costs, p+"="+strings.TrimSpace(kubectl(t, "-n", demoNS, "get", "pod", p, "-o",
				`jsonpath={.metadata.annotations.controller\.kubernetes\.io/pod-deletion-cost}`)))
		}
		t.Logf("workers left: %v (deletion costs %v)", left, costs)
		if slices.Contains(left, light) {
			t.Errorf("the least-loaded worker %s is still there; removed instead one of %v", light, pods)
		}
		r := l.Stop(t, sig.since(t, start))
		t.Logf("clients through the gateway meanwhile: %v", r)
		if r.Reconnected == 0 || r.NotBack != 0 || r.BackWithinMs > 5000 || r.Lost != 0 {
			t.Errorf("want the removed worker's clients back within 5 s of SIGTERM, nothing lost: %v", r)
		}
	})

	t.Run("Status", func(t *testing.T) {
		var sc struct {
			Status struct {
				RingEpoch   int64    `json:"ringEpoch"`
				RingBrokers []string `json:"ringBrokers"`
				Workers     struct {
					ReadyReplicas int `json:"readyReplicas"`
				} `json:"workers"`
				ObservedGeneration int64 `json:"observedGeneration"`
				Conditions         []struct {
					Type, Status, Reason string
				} `json:"conditions"`
			} `json:"status"`
			Metadata struct {
				Generation int64 `json:"generation"`
			} `json:"metadata"`
		}
		testutil.EventuallyNil(t, 30*time.Second, "status", func() error {
			out := kubectl(t, "-n", demoNS, "get", "socketcluster", name, "-o", "json")
			if err := json.Unmarshal([]byte(out), &sc); err != nil {
				return err
			}
			s := sc.Status
			if s.RingEpoch == 0 || len(s.RingBrokers) != 2 || s.Workers.ReadyReplicas != 3 || s.ObservedGeneration != sc.Metadata.Generation {
				return fmt.Errorf("status %+v", s)
			}
			return nil
		})
		t.Logf("$ kubectl -n %s get socketcluster\n%s", demoNS, kubectl(t, "-n", demoNS, "get", "socketcluster"))
		t.Logf("conditions: %+v", sc.Status.Conditions)
	})
}

// waitWorkers waits for n ready workers and the resource to say so.
func (c *cluster) waitWorkers(t *testing.T, name string, n int) {
	t.Helper()
	testutil.EventuallyNil(t, 120*time.Second, fmt.Sprintf("%d workers", n), func() error {
		if p := c.pods(t, "worker"); len(p) != n {
			return fmt.Errorf("%d worker pods", len(p))
		}
		ready := strings.TrimSpace(kubectl(t, "-n", c.ns, "get", "socketcluster", name, "-o", "jsonpath={.status.workers.readyReplicas}"))
		if ready != fmt.Sprint(n) {
			return fmt.Errorf("status: %s ready workers", ready)
		}
		return nil
	})
}

type podInfo struct {
	name, ip string
	created  time.Time
}

// podsByAge lists a component's pods, oldest first.
func (c *cluster) podsByAge(t *testing.T, comp string) []podInfo {
	var list struct {
		Items []struct {
			Metadata struct {
				Name              string    `json:"name"`
				CreationTimestamp time.Time `json:"creationTimestamp"`
			} `json:"metadata"`
			Status struct {
				PodIP string `json:"podIP"`
			} `json:"status"`
		} `json:"items"`
	}
	getJSON(t, &list, "pods", "-n", c.ns, "-l", c.selector(comp))
	var out []podInfo
	for _, p := range list.Items {
		out = append(out, podInfo{p.Metadata.Name, p.Status.PodIP, p.Metadata.CreationTimestamp})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].created.Before(out[j].created) })
	return out
}
