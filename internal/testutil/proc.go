package testutil

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

// SccBinary builds cmd/scc once per test process (the Go build cache makes
// it quick after the first time) and returns its path. The binary is
// removed when the process's tests are done (see Cleanup), or, if the
// process died first (a -timeout runs no cleanup), by the next one.
func SccBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		removeOrphanBuilds()
		buildDir, buildErr = os.MkdirTemp("", fmt.Sprintf("scc-test-bin-%d-", os.Getpid()))
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "scc")
		cmd := exec.Command("go", "build", "-o", buildBin, "github.com/scc-k8s/scc/cmd/scc")
		cmd.Stderr = os.Stderr
		buildErr = cmd.Run()
	})
	if buildErr != nil {
		t.Fatalf("go build cmd/scc: %v", buildErr)
	}
	return buildBin
}

// removeOrphanBuilds removes the builds of test processes that are gone.
func removeOrphanBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "scc-test-bin-*-*"))
	for _, d := range dirs {
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(d), "scc-test-bin-%d-", &pid); err != nil || pid <= 0 {
			continue
		}
		if p, err := os.FindProcess(pid); err == nil && p.Signal(syscall.Signal(0)) == nil {
			continue // its process is alive
		}
		_ = os.RemoveAll(d)
	}
}

// Cleanup removes what SccBinary built; call it from TestMain after m.Run.
func Cleanup() {
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
}

// FreePort returns a loopback port nothing listens on (at the moment),
// for a process the test starts to listen on. It comes from below the
// kernel's ephemeral range (and below Kubernetes' NodePorts): a port
// taken from that range (listening on :0) could be handed to some other
// test's outgoing connection before the process binds it (a CI run saw
// "address already in use" that way, with thousands of client
// connections opening in the packages tested alongside). Random, and
// never the same twice in one test process.
func FreePort(t testing.TB) int {
	t.Helper()
	hi := min(ephemeralLow(), 30000)
	const lo = 10000
	for range 200 {
		p := lo + rand.IntN(hi-lo)
		portsMu.Lock()
		used := portsGiven[p]
		portsGiven[p] = true
		portsMu.Unlock()
		if used {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ln.Close()
		return p
	}
	t.Fatal("no free loopback port below the ephemeral range")
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= 11000 {
		return 32768
	}
	return n
}

// Proc is a process a test started.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Done chan struct{} // closed when the process has exited
}

// StartProc runs bin with args and env added to the test's environment;
// its output goes to a file that is printed if the test fails. The process
// is killed when the test ends.
func StartProc(t testing.TB, bin, name string, env []string, args ...string) *Proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	DieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Proc{Name: name, Cmd: cmd, Done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.Done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.Done
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- %s log ---\n%s", name, b)
		}
	})
	return p
}

// Terminate sends SIGTERM and waits up to timeout for the process to exit.
func (p *Proc) Terminate(t testing.TB, timeout time.Duration) {
	t.Helper()
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v of SIGTERM", p.Name, timeout)
	}
}

// WaitHTTP waits (10 s at most) until url answers 200.
func WaitHTTP(t testing.TB, url string) {
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

// Scrape reads a /metrics page's samples without labels, by name (empty
// when the page cannot be read).
func Scrape(url string) map[string]float64 {
	out := map[string]float64{}
	hc := http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && !strings.HasPrefix(f[0], "#") {
			v, _ := strconv.ParseFloat(f[1], 64)
			out[f[0]] = v
		}
	}
	return out
}

// MustScrape is Scrape for a check that needs names: it reads the page
// again (up to five times: a saturated process may not answer within
// Scrape's 2 s) until every one is there, and fails the test if one never
// is. A check reading a missing sample as 0 would pass on a page it could
// not read.
func MustScrape(t testing.TB, url string, names ...string) map[string]float64 {
	t.Helper()
	var missing []string
	for try := 0; try < 5; try++ {
		m := Scrape(url)
		missing = missing[:0]
		for _, n := range names {
			if _, ok := m[n]; !ok {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			return m
		}
	}
	t.Fatalf("%s: no %v in five tries", url, missing)
	return nil
}
