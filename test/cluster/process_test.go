package cluster_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scc-k8s/scc/pkg/grpcx"
	"github.com/scc-k8s/scc/pkg/member"
	"github.com/scc-k8s/scc/proto/sccv1"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// startProc runs the scc binary; its output goes to a file printed when
// the test fails.
func startProc(t *testing.T, bin, name string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "SCC_CLUSTER_TOKEN=process-test-token", "SCC_LOG_LEVEL=info")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- %s log ---\n%s", name, b)
		}
	})
	return p
}

func (p *proc) terminate(t *testing.T, timeout time.Duration) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v of SIGTERM", p.name, timeout)
	}
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

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
	bin := filepath.Join(t.TempDir(), "scc")
	build := exec.Command("go", "build", "-o", bin, "github.com/scc-k8s/scc/cmd/scc")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	statePort := freePort(t)
	stateAddr := fmt.Sprint("127.0.0.1:", statePort)
	startProc(t, bin, "state", "state", "--listen", stateAddr, "--http-listen", "", "--settle-window", "0")
	brokers := []*proc{}
	addBroker := func(i int) {
		brokers = append(brokers, startProc(t, bin, fmt.Sprint("broker-", i), "broker", "--id", fmt.Sprint("broker-", i),
			"--listen", fmt.Sprint("127.0.0.1:", freePort(t)), "--http-listen", "", "--state", stateAddr, "--drain-timeout", "20s"))
	}
	addBroker(1)
	addBroker(2)
	var urls []string
	for i := 1; i <= 2; i++ {
		port := freePort(t)
		startProc(t, bin, fmt.Sprint("worker-", i), "worker", "--id", fmt.Sprint("worker-", i),
			"--listen", fmt.Sprint("127.0.0.1:", port), "--state", stateAddr, "--auth-key", "k")
		waitHTTP(t, fmt.Sprint("http://127.0.0.1:", port, "/readyz"))
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
	brokers[0].terminate(t, 20*time.Second) // drains, then exits
	w.wait(t, 2, 2)
	time.Sleep(300 * time.Millisecond)
	sent, acked, failed, missing, dups, reordered := l.finish()
	t.Logf("processes: %d sent, %d acked, %d failed, missing %d, duplicates %d, out of order %d", sent, acked, failed, missing, dups, reordered)
	if failed > 0 || missing > 0 || dups > 0 || reordered > 0 || acked == 0 {
		t.Fatal("lost, doubled or reordered messages across processes")
	}
}
