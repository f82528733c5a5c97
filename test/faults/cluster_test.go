package faults

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/testutil"
)

// proc is one component, restartable with the same arguments.
type proc struct {
	name string
	args []string
	uid  int // run as this user when > 0 (the network faults single it out)
	t    *testing.T
	bin  string
	env  []string
	log  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) start() {
	p.t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), p.env...)
	if p.uid > 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(p.uid), Gid: uint32(p.uid)}}
	}
	testutil.DieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

func (p *proc) signal(s syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.cmd.Process.Signal(s)
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	<-done
}

// cluster is state, 3 brokers, 3 workers and 2 gateways as processes on
// loopback, as in production (cluster token, gRPC between them; the
// gateways share their client port as two replicas share a Service, the
// kernel spreading connections over them).
type cluster struct {
	state             *proc
	brokers, workers  []*proc
	gateways          []*proc
	stateAddr, stHTTP string
	brokerAddrs       []string
	workerPorts       []string
	gwPort            string   // the clients' port, shared
	gwHTTP            []string // each gateway's own /metrics
}

const workerUID = 65533 // the user worker-1 runs as when the suite is root

func startCluster(t *testing.T, singleOut bool) *cluster {
	bin := testutil.SccBinary(t)
	env := []string{"SCC_CLUSTER_TOKEN=fault-suite-token", "SCC_LOG_LEVEL=info"}
	dir := t.TempDir()
	port := func() string { return strconv.Itoa(testutil.FreePort(t)) }
	c := &cluster{stateAddr: "127.0.0.1:" + port(), stHTTP: "127.0.0.1:" + port(), gwPort: port()}
	mk := func(name string, uid int, args ...string) *proc {
		p := &proc{name: name, args: args, uid: uid, t: t, bin: bin, env: env, log: filepath.Join(dir, name+".log")}
		p.start()
		return p
	}
	c.state = mk("state", 0, "state", "--listen", c.stateAddr, "--http-listen", c.stHTTP, "--settle-window", "1s")
	for i := 1; i <= 3; i++ {
		addr := "127.0.0.1:" + port()
		c.brokerAddrs = append(c.brokerAddrs, addr)
		c.brokers = append(c.brokers, mk(fmt.Sprint("broker-", i), 0, "broker", "--id", fmt.Sprint("broker-", i),
			"--listen", addr, "--http-listen", "", "--state", c.stateAddr))
	}
	for i := 1; i <= 3; i++ {
		wp := port()
		c.workerPorts = append(c.workerPorts, wp)
		uid := 0
		if i == 1 && singleOut {
			uid = workerUID
		}
		c.workers = append(c.workers, mk(fmt.Sprint("worker-", i), uid, "worker", "--id", fmt.Sprint("worker-", i),
			"--listen", "127.0.0.1:"+wp, "--state", c.stateAddr, "--auth-key", "k", "--trusted-proxies", "127.0.0.1"))
	}
	for i := 1; i <= 2; i++ {
		h := "127.0.0.1:" + port()
		c.gwHTTP = append(c.gwHTTP, h)
		c.gateways = append(c.gateways, mk(fmt.Sprint("gateway-", i), 0, "gateway", "--id", fmt.Sprint("gateway-", i),
			"--listen", "127.0.0.1:"+c.gwPort, "--reuse-port", "--http-listen", h, "--state", c.stateAddr, "--drain-delay", "0"))
	}
	t.Cleanup(func() {
		for _, p := range c.all() {
			p.signal(syscall.SIGCONT)
			p.kill()
		}
		if t.Failed() {
			for _, p := range c.all() {
				b, _ := os.ReadFile(p.log)
				if len(b) > 6000 {
					b = b[len(b)-6000:]
				}
				t.Logf("--- %s log (end) ---\n%s", p.name, b)
			}
		}
	})
	testutil.Eventually(t, 20*time.Second, func() bool {
		v, err := c.view()
		return err == nil && len(v.Brokers) == 3 && v.readyWorkers() == 3 && v.Phase == "PHASE_STABLE"
	}, "3 brokers in the ring, 3 ready workers")
	for _, h := range c.gwHTTP {
		testutil.WaitHTTP(t, "http://"+h+"/readyz")
	}
	return c
}

func (c *cluster) all() []*proc {
	return append(append(append([]*proc{c.state}, c.brokers...), c.workers...), c.gateways...)
}

// gatewaysRoute tells whether every gateway routes to n workers.
func (c *cluster) gatewaysRoute(n int) bool {
	for _, h := range c.gwHTTP {
		if testutil.Scrape("http://" + h + "/metrics")["scc_gateway_routable_workers"] != float64(n) {
			return false
		}
	}
	return true
}

// gatewayConns is the clients connected through the gateways.
func (c *cluster) gatewayConns() int {
	n := 0.0
	for _, h := range c.gwHTTP {
		n += testutil.Scrape("http://" + h + "/metrics")["scc_gateway_connections"]
	}
	return int(n)
}

// view is state's GET /cluster.
type view struct {
	Epoch   string `json:"epoch"`
	Phase   string `json:"phase"`
	Brokers []struct {
		ID string `json:"id"`
	} `json:"brokers"`
	Workers []struct {
		ID    string `json:"id"`
		Ready bool   `json:"ready"`
	} `json:"workers"`
}

func (v *view) readyWorkers() int {
	n := 0
	for _, w := range v.Workers {
		if w.Ready {
			n++
		}
	}
	return n
}

func (v *view) workerReady(id string) bool {
	for _, w := range v.Workers {
		if w.ID == id {
			return w.Ready
		}
	}
	return false
}

func (c *cluster) view() (*view, error) {
	hc := http.Client{Timeout: time.Second}
	resp, err := hc.Get("http://" + c.stHTTP + "/cluster")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	v := &view{}
	return v, json.NewDecoder(resp.Body).Decode(v)
}

// until polls cond every 20 ms for at most d and returns when it held
// (or zero when it never did).
func until(d time.Duration, cond func() bool) time.Time {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Time{}
}
