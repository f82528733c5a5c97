//go:build e2e

package e2e

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// testTrafficStayed checks, on a node e2e/up.sh runs (SCC_E2E_UPLINK set),
// that no connection from a pod, or to a pod or Service address, left the
// machine: every such entry in connection tracking was answered by a pod
// or by this host. Packets the guard refused never enter the table (they
// are dropped before conntrack confirms them); their counts are printed.
func testTrafficStayed(t *testing.T) {
	uplink := os.Getenv("SCC_E2E_UPLINK")
	if uplink == "" {
		t.Skip("not our own node (SCC_E2E_UPLINK unset): nothing to check here")
	}
	_, pods, _ := net.ParseCIDR(os.Getenv("SCC_E2E_POD_CIDR"))
	_, svcs, _ := net.ParseCIDR(os.Getenv("SCC_E2E_SVC_CIDR"))
	if pods == nil || svcs == nil {
		t.Fatal("SCC_E2E_POD_CIDR and SCC_E2E_SVC_CIDR must be set")
	}
	local := map[string]bool{}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			local[ipn.IP.String()] = true
		}
	}
	out, err := exec.Command("conntrack", "-L").CombinedOutput()
	if err != nil {
		t.Fatalf("conntrack -L: %v: %s", err, out)
	}
	checked, left := 0, 0
	for _, line := range strings.Split(string(out), "\n") {
		// Original direction: the first src= and dst=; the reply's src= is
		// who really answered (after kube-proxy's rewrite).
		var srcs, dsts []string
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "src="); ok {
				srcs = append(srcs, v)
			} else if v, ok := strings.CutPrefix(f, "dst="); ok {
				dsts = append(dsts, v)
			}
		}
		if len(srcs) < 2 || len(dsts) < 1 {
			continue
		}
		src, dst, answeredBy := net.ParseIP(srcs[0]), net.ParseIP(dsts[0]), net.ParseIP(srcs[1])
		if src == nil || dst == nil || answeredBy == nil {
			continue
		}
		if !pods.Contains(src) && !pods.Contains(dst) && !svcs.Contains(dst) {
			continue
		}
		// Link-local multicast (the bridge's IGMP reports) is never routed.
		if dst.IsLinkLocalMulticast() {
			continue
		}
		checked++
		if !pods.Contains(answeredBy) && !local[answeredBy.String()] && !answeredBy.IsLoopback() {
			left++
			t.Errorf("left the machine: %s", line)
		}
	}
	t.Logf("connection tracking: %d entries from pods or to pod and Service addresses, %d answered from beyond this machine", checked, left)
	for _, table := range []string{"filter", "mangle"} {
		rules, _ := exec.Command("iptables", "-t", table, "-L", "-v", "-n").Output()
		for _, l := range strings.Split(string(rules), "\n") {
			if strings.Contains(l, "scc-e2e-guard") {
				t.Logf("guard (%s): %s", table, strings.Join(strings.Fields(l), " "))
			}
		}
	}
}
