package cluster_test

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/pkg/grpcx"
	"github.com/scc-k8s/scc/pkg/member"
	"github.com/scc-k8s/scc/proto/sccv1"
)

// viewer watches the cluster view as a gateway-role member would.
type viewer struct {
	mu sync.Mutex
	v  *sccv1.ClusterView
}

func (w *viewer) stable(brokers, workers int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.v != nil && !w.v.Settling && w.v.Phase == sccv1.Phase_PHASE_STABLE && len(w.v.Brokers) == brokers && len(w.v.Workers) == workers
}

func (w *viewer) wait(t *testing.T, brokers, workers int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !w.stable(brokers, workers) {
		if time.Now().After(deadline) {
			w.mu.Lock()
			t.Fatalf("view not stable with %d brokers, %d workers: %v", brokers, workers, w.v)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // workers apply the view they were sent
}

// TestProcesses runs the cluster as separate scc processes: state, brokers
// and workers, a steady load, a broker added and one drained with SIGTERM.
func TestProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the scc binary")
	}
	bin := testutil.SccBinary(t)
	env := []string{"SCC_CLUSTER_TOKEN=process-test-token", "SCC_LOG_LEVEL=info"}
	statePort := testutil.FreePort(t)
	stateAddr := fmt.Sprint("127.0.0.1:", statePort)
	testutil.StartProc(t, bin, "state", env, "state", "--listen", stateAddr, "--http-listen", "", "--settle-window", "0")
	brokers := []*testutil.Proc{}
	addBroker := func(i int) {
		brokers = append(brokers, testutil.StartProc(t, bin, fmt.Sprint("broker-", i), env, "broker", "--id", fmt.Sprint("broker-", i),
			"--listen", fmt.Sprint("127.0.0.1:", testutil.FreePort(t)), "--http-listen", "", "--state", stateAddr, "--drain-timeout", "20s"))
	}
	addBroker(1)
	addBroker(2)
	var urls []string
	for i := 1; i <= 2; i++ {
		port := testutil.FreePort(t)
		testutil.StartProc(t, bin, fmt.Sprint("worker-", i), env, "worker", "--id", fmt.Sprint("worker-", i),
			"--listen", fmt.Sprint("127.0.0.1:", port), "--state", stateAddr, "--auth-key", "k")
		testutil.WaitHTTP(t, fmt.Sprint("http://127.0.0.1:", port, "/readyz"))
		urls = append(urls, "ws://127.0.0.1:"+strconv.Itoa(port)+"/socketcluster/")
	}
	w := &viewer{}
	m, err := member.Start(member.Config{StateAddr: stateAddr, GRPC: grpcx.Config{Token: "process-test-token"},
		Member: &sccv1.Member{Id: "test-viewer", Role: sccv1.Role_ROLE_GATEWAY},
		OnView: func(v *sccv1.ClusterView) { w.mu.Lock(); w.v = v; w.mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	w.wait(t, 2, 2)

	l := startLoadOn(t, urls, loadConfig{Channels: 200, SubsPerWorker: 2, PubsPerWorker: 1, Rate: 2000})
	time.Sleep(500 * time.Millisecond)
	addBroker(3)
	w.wait(t, 3, 2)
	time.Sleep(300 * time.Millisecond)
	brokers[0].Terminate(t, 20*time.Second) // drains, then exits
	w.wait(t, 2, 2)
	time.Sleep(300 * time.Millisecond)
	sent, acked, failed, missing, dups, reordered := l.finish()
	t.Logf("processes: %d sent, %d acked, %d failed, missing %d, duplicates %d, out of order %d", sent, acked, failed, missing, dups, reordered)
	if failed > 0 || missing > 0 || dups > 0 || reordered > 0 || acked == 0 {
		t.Fatal("lost, doubled or reordered messages across processes")
	}
}
