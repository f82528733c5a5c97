//go:build e2e

// Package e2e is the end-to-end suite: it drives a real Kubernetes cluster
// (any kubeconfig; e2e/up.sh brings up a single node) with kubectl, as a
// user would, and the official SocketCluster client through the gateway's
// Service. Run it with e2e/run.sh; e2e/test.sh brings the node up, runs
// the suite and tears the node down.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/testutil"
)

const ns = "scc"

var (
	kubectlBin = "kubectl"
	repoRoot   string
)

func TestMain(m *testing.M) {
	if os.Getenv("KUBECONFIG") == "" {
		fmt.Fprintln(os.Stderr, "e2e: KUBECONFIG is not set (bash e2e/up.sh prints one)")
		os.Exit(2)
	}
	if k := os.Getenv("KUBECTL"); k != "" {
		kubectlBin = k
	}
	wd, _ := os.Getwd()
	repoRoot = filepath.Dir(wd)
	os.Exit(m.Run())
}

// kubectl runs kubectl and returns its standard output; any failure fails
// the test with kubectl's own words.
func kubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := kubectlErr(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func kubectlErr(args ...string) (string, error) {
	return kubectlIn(nil, args...)
}

func kubectlIn(stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kubectlBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// getJSON decodes `kubectl get ... -o json`.
func getJSON(t testing.TB, v any, args ...string) {
	t.Helper()
	out := kubectl(t, append(append([]string{"get"}, args...), "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("kubectl get %v: %v", args, err)
	}
}

// dumpOnFailure prints what a user debugging a failure would look at:
// pods, events, the SocketCluster resources' conditions and every scc
// pod's recent log.
func dumpOnFailure(t *testing.T, namespace string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		show := func(args ...string) {
			out, err := kubectlErr(args...)
			t.Logf("$ kubectl %s\n%s%v", strings.Join(args, " "), out, errOrEmpty(err))
		}
		show("get", "pods,deploy,svc,endpointslices", "-n", namespace, "-o", "wide")
		show("get", "events", "-n", namespace, "--sort-by=.lastTimestamp")
		show("get", "socketclusters", "-n", namespace, "-o", "yaml")
		pods, _ := kubectlErr("get", "pods", "-n", namespace, "-o", "name")
		for _, p := range strings.Fields(pods) {
			show("logs", "-n", namespace, p, "--all-containers", "--tail=60", "--prefix")
			show("logs", "-n", namespace, p, "--all-containers", "--tail=30", "--prefix", "--previous")
		}
	})
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// podProxy GETs a path from a pod's port through the API server (works on
// any cluster, whether or not pod addresses are reachable from here).
func podProxy(t testing.TB, namespace, pod string, port int, path string) (string, error) {
	return kubectlErr("get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:%d/proxy%s", namespace, pod, port, path))
}

// metric reads one sample's value from Prometheus text (the first line
// whose name and labels start with the given prefix).
func metric(text, prefix string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix+" ") || strings.HasPrefix(line, prefix+"{") {
			f := strings.Fields(line)
			var v float64
			if _, err := fmt.Sscan(f[len(f)-1], &v); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}

// gatewayAddr is where clients reach the gateway from this machine: its
// Service's cluster address (our node: kube-proxy programs the host too),
// else, on other clusters, its node port on a node's address (kind).
func gatewayAddr(t testing.TB, namespace, svc string) (string, int) {
	t.Helper()
	var s struct {
		Spec struct {
			ClusterIP string `json:"clusterIP"`
			Ports     []struct {
				Port     int `json:"port"`
				NodePort int `json:"nodePort"`
			} `json:"ports"`
		} `json:"spec"`
	}
	getJSON(t, &s, "service", svc, "-n", namespace)
	p := s.Spec.Ports[0]
	var host string
	var port int
	// On our own node the cluster address must work: that is what is
	// tested. Elsewhere (kind) the node port is how the host gets in.
	ownNode := os.Getenv("SCC_E2E_UPLINK") != ""
	testutil.EventuallyNil(t, 60*time.Second, "gateway reachable", func() error {
		if healthy(s.Spec.ClusterIP, p.Port) {
			host, port = s.Spec.ClusterIP, p.Port
			return nil
		}
		if ownNode {
			return fmt.Errorf("%s:%d does not answer /readyz", s.Spec.ClusterIP, p.Port)
		}
		var nodes struct {
			Items []struct {
				Status struct {
					Addresses []struct{ Type, Address string } `json:"addresses"`
				} `json:"status"`
			} `json:"items"`
		}
		getJSON(t, &nodes, "nodes")
		for _, n := range nodes.Items {
			for _, a := range n.Status.Addresses {
				if a.Type == "InternalIP" && p.NodePort != 0 && healthy(a.Address, p.NodePort) {
					host, port = a.Address, p.NodePort
					return nil
				}
			}
		}
		return fmt.Errorf("neither %s:%d nor a node port answers /readyz", s.Spec.ClusterIP, p.Port)
	})
	return host, port
}

func healthy(host string, port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(host, fmt.Sprint(port)), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "GET /readyz HTTP/1.1\r\nHost: e2e\r\nConnection: close\r\n\r\n")
	buf := make([]byte, 12)
	n, _ := c.Read(buf)
	return n == 12 && string(buf[9:12]) == "200"
}

// waitStep logs what the suite waits on, and when it is done how long it took.
func waitStep(t *testing.T, what string) func() {
	start := time.Now()
	t.Logf("%s ...", what)
	return func() { t.Logf("%s: done in %v", what, time.Since(start).Round(100*time.Millisecond)) }
}
