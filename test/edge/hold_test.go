package edge_test

// Holders: helper processes of this test binary that hold client sockets
// for the tests that need more of them than one process may open (20,000
// files here). A holder connects its clients (when told to wait, only once
// a line comes on its stdin), subscribes each to a channel (if there are
// channels), prints "ready" with when it began and ended dialing, then
// answers "report" lines on its stdin with what its clients received
// since the last report; it exits (the kernel closes every socket at once)
// when its stdin closes.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/pkg/client"
)

func TestMain(m *testing.M) {
	if urls := os.Getenv("SCC_HOLD_URLS"); urls != "" {
		os.Exit(holdMain(strings.Split(urls, ",")))
	}
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}

// holdSpec is what one holder holds: clients first..first+n-1 (global
// numbers), client g on urls[g%len(urls)] and channel prefix+(g%channels)
// (none when channels is 0), dialing from the loopback address source
// (empty: any), after a "go" line if wait; raw clients (rawDial: no
// channels, no pings answered) instead of pkg/client's if raw.
type holdSpec struct {
	urls     []string
	first, n int
	channels int
	prefix   string
	source   string
	wait     bool
	raw      bool
	// reset: the clients' sockets end with a reset when the holder goes
	// (SO_LINGER 0), not a close that leaves each one's port in TIME_WAIT
	// for a minute; back-to-back floods of fresh connections from the
	// same addresses otherwise slow down in the clients' connect (the
	// kernel's search for a free port: 13 CPU-s for 5,000 connects seen
	// in the sixth flood within a minute).
	reset bool
}

// holdReport is a holder's answer to "report".
type holdReport struct {
	Received  int64   `json:"received"`   // messages, all clients
	Silent    int     `json:"silent"`     // clients that received nothing
	Dropped   int64   `json:"dropped"`    // connections lost since ready
	LatencyUS []int64 `json:"latency_us"` // publish-to-receipt, per message
}

func holdMain(urls []string) int {
	n, _ := strconv.Atoi(os.Getenv("SCC_HOLD_N"))
	first, _ := strconv.Atoi(os.Getenv("SCC_HOLD_FIRST"))
	chans, _ := strconv.Atoi(os.Getenv("SCC_HOLD_CHANNELS"))
	prefix, source := os.Getenv("SCC_HOLD_PREFIX"), os.Getenv("SCC_HOLD_SOURCE")
	raw := os.Getenv("SCC_HOLD_RAW") != ""
	dialer := *websocket.DefaultDialer
	dialer.ReadBufferSize, dialer.WriteBufferSize = 1024, 1024
	dialer.HandshakeTimeout = 30 * time.Second
	nd := &net.Dialer{KeepAlive: -1} // the protocol's pings find dead peers
	if source != "" {
		nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	if os.Getenv("SCC_HOLD_RESET") != "" {
		nd.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	dialer.NetDialContext = nd.DialContext

	var mu sync.Mutex
	var lat []int64
	var dropped atomic.Int64
	counts := make([]atomic.Int64, n)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	in := bufio.NewScanner(os.Stdin)
	if os.Getenv("SCC_HOLD_WAIT") != "" {
		fmt.Println("waiting")
		in.Scan()
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	start, cpu0 := time.Now(), cpuTime()
	for j := 0; j < n; j++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			g := first + j
			if raw {
				rc, err := rawDial(ctx, nd, urls[g%len(urls)])
				if err != nil {
					errs <- err
					return
				}
				go func() { // until the connection ends
					_, _ = io.Copy(io.Discard, rc.br)
					dropped.Add(1)
				}()
				return
			}
			c := client.New(client.Options{URL: urls[g%len(urls)], NoReconnect: true, Dialer: &dialer})
			c.OnDisconnect(func(*client.CloseError) { dropped.Add(1) })
			if err := c.Connect(ctx); err != nil {
				errs <- err
				return
			}
			if chans == 0 {
				return
			}
			// A message's data is its publish time in unix nanoseconds.
			err := c.Subscribe(ctx, prefix+strconv.Itoa(g%chans), func(_ string, data json.RawMessage) {
				counts[j].Add(1)
				if sent, err := strconv.ParseInt(string(data), 10, 64); err == nil {
					d := (c.ReceivedAt().UnixNano() - sent) / 1000
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			})
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	end := time.Now()
	close(errs)
	if err := <-errs; err != nil {
		fmt.Fprintln(os.Stderr, "holder:", err)
		return 1
	}
	dropped.Store(0)
	fmt.Println("ready", start.UnixNano(), end.UnixNano(), int64(cpuTime()-cpu0))
	for in.Scan() {
		var r holdReport
		for j := range counts {
			c := counts[j].Swap(0)
			r.Received += c
			if c == 0 {
				r.Silent++
			}
		}
		mu.Lock()
		r.LatencyUS, lat = lat, nil
		mu.Unlock()
		r.Dropped = dropped.Load()
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
	}
	return 0
}

// holder is a running holder process.
type holder struct {
	spec holdSpec
	cmd  *exec.Cmd
	in   interface{ Close() error }
	w    *bufio.Writer
	out  *bufio.Reader
}

// startHolder starts a holder; ready waits until it holds its clients.
func startHolder(t *testing.T, s holdSpec) *holder {
	t.Helper()
	self, _ := os.Executable()
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), "SCC_HOLD_URLS="+strings.Join(s.urls, ","), fmt.Sprint("SCC_HOLD_N=", s.n),
		fmt.Sprint("SCC_HOLD_FIRST=", s.first), fmt.Sprint("SCC_HOLD_CHANNELS=", s.channels),
		"SCC_HOLD_PREFIX="+s.prefix, "SCC_HOLD_SOURCE="+s.source)
	if s.wait {
		cmd.Env = append(cmd.Env, "SCC_HOLD_WAIT=1")
	}
	if s.raw {
		cmd.Env = append(cmd.Env, "SCC_HOLD_RAW=1")
	}
	if s.reset {
		cmd.Env = append(cmd.Env, "SCC_HOLD_RESET=1")
	}
	testutil.DieWithTest(cmd)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	h := &holder{spec: s, cmd: cmd, in: in, w: bufio.NewWriter(in), out: bufio.NewReaderSize(out, 1<<20)}
	if s.wait {
		if line, _ := h.out.ReadString('\n'); line != "waiting\n" {
			t.Fatalf("holder of clients %d-%d: %q", s.first, s.first+s.n-1, line)
		}
	}
	return h
}

// dial tells a holder started with wait to begin.
func (h *holder) dial(t *testing.T) { h.send(t, "go") }

// send writes one line to the holder's stdin.
func (h *holder) send(t *testing.T, line string) {
	t.Helper()
	h.w.WriteString(line + "\n")
	if err := h.w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// ready waits (the holder gives up after 5 minutes) until every client of
// the holder is connected and subscribed, and returns when it began and
// ended dialing and the CPU time it spent meanwhile.
func (h *holder) ready(t *testing.T) (start, end time.Time, cpu time.Duration) {
	t.Helper()
	line, _ := h.out.ReadString('\n')
	var s, e, c int64
	if _, err := fmt.Sscanf(line, "ready %d %d %d\n", &s, &e, &c); err != nil {
		t.Fatalf("holder of clients %d-%d: %q", h.spec.first, h.spec.first+h.spec.n-1, line)
	}
	return time.Unix(0, s), time.Unix(0, e), time.Duration(c)
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// report asks the holder what its clients received since the last report.
func (h *holder) report(t *testing.T) holdReport {
	t.Helper()
	h.send(t, "report")
	line, err := h.out.ReadString('\n')
	if err != nil {
		t.Fatalf("holder report: %v", err)
	}
	var r holdReport
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("holder report %q: %v", line, err)
	}
	return r
}

// exit closes the holder's stdin: it exits and its sockets close at once.
func (h *holder) exit() { h.in.Close() }
