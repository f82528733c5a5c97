// Package edge_test holds tests of the worker's edge that need the worker
// in a process of its own: its memory, measured from /proc, under clients
// that attack it.
package edge_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
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

	"github.com/scc-k8s/scc/internal/testutil"
)

// rss is a process's resident memory in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// metric reads one unlabeled metric of the worker.
func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// 10,000 sockets each send a frame header declaring 1 MiB and then stall
// (the attack that pinned 1 MiB per socket when the reader allocated a
// message at its declared size): the worker's memory grows by less than
// 256 MiB, and the sockets are closed at the handshake timeout. The worker
// runs with its pre-handshake limit raised to 1 MiB, so that what is
// measured is the reader's own defence (buffers that grow as bytes
// arrive); with the default 64 KiB such a header is refused at once with
// 1009 (TestHostileInputs in services/worker).
func TestStalledDeclaredPayloads(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 connections")
	}
	const n = 10000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < n+1000 {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		if lim.Max < n+1000 {
			t.Skipf("open-file limit %d is below %d", lim.Max, n+1000)
		}
	}
	bin := filepath.Join(t.TempDir(), "scc")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/scc")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	const timeout = 6 * time.Second
	var logs bytes.Buffer
	cmd := exec.Command(bin, "worker", "--listen", addr, "--handshake-timeout", timeout.String(),
		"--handshake-max-payload", "1048576", "--auth-key", "stall-test", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	testutil.DieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("worker log:\n%s", logs.String())
		}
	})
	base := "http://" + addr
	for deadline := time.Now().Add(10 * time.Second); ; {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker did not come up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	before := rss(t, cmd.Process.Pid)

	// A text frame declaring 1 MiB (64-bit length), its mask, one byte.
	header := []byte{0x81, 0x80 | 127}
	header = binary.BigEndian.AppendUint64(header, 1<<20)
	header = append(header, 1, 2, 3, 4, '{')
	upgrade := []byte("GET /socketcluster/ HTTP/1.1\r\nHost: " + addr + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := time.Now()
	for w := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 50 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
				c.Write(upgrade)
				br := bufio.NewReader(c)
				resp, err := http.ReadResponse(br, nil)
				if err != nil || resp.StatusCode != 101 {
					errs <- fmt.Errorf("upgrade %d: %v", i, err)
					return
				}
				c.Write(header)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	opened := time.Since(start)
	time.Sleep(500 * time.Millisecond) // the last headers are read
	during := rss(t, cmd.Process.Pid)
	if got := metric(t, base, "scc_worker_connections"); got != n {
		t.Fatalf("%v connections open, want %d", got, n)
	}
	grew := during - before
	t.Logf("%d stalled sockets opened in %v: worker RSS %d MiB -> %d MiB (+%d KiB per socket)",
		n, opened.Round(time.Millisecond), before>>20, during>>20, grew/n>>10)
	if grew >= 256<<20 {
		t.Errorf("RSS grew by %d MiB, want < 256 MiB", grew>>20)
	}
	// Every socket is closed at the handshake timeout (4005).
	for deadline := start.Add(timeout + 10*time.Second); metric(t, base, "scc_worker_connections") > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%v sockets still open %v after the handshake timeout", metric(t, base, "scc_worker_connections"), timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		_ = conns[i].SetReadDeadline(time.Now().Add(time.Second))
		b := make([]byte, 4)
		if k, err := conns[i].Read(b); err != nil || k < 4 || b[0] != 0x88 || binary.BigEndian.Uint16(b[2:]) != 4005 {
			t.Errorf("socket %d: read % x (%v), want a close frame with 4005", i, b[:k], err)
		}
	}
}
