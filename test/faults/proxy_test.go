package faults

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// faultProxy sits on the path from one worker to one broker (iptables
// sends that worker's connections to the broker's port here, matched by
// the worker's user id) and passes, holds (a silent cut: connections stay
// open, nothing moves either way) or delays what it carries.
type faultProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	delay time.Duration
	wake  *sync.Cond
}

func startProxy(t *testing.T, target string) *faultProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target}
	p.wake = sync.NewCond(&p.mu)
	t.Cleanup(func() { ln.Close() })
	go p.serve()
	return p
}

func (p *faultProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *faultProxy) set(cut bool, delay time.Duration) {
	p.mu.Lock()
	p.cut, p.delay = cut, delay
	p.wake.Broadcast()
	p.mu.Unlock()
}

func (p *faultProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				return
			}
			go p.pipe(u, c)
			p.pipe(c, u)
		}()
	}
}

// pipe copies src to dst, each chunk held while the path is cut and
// delayed by the current delay.
func (p *faultProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.cut {
				p.wake.Wait()
			}
			d := p.delay
			p.mu.Unlock()
			if d > 0 {
				time.Sleep(d)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// redirect sends the connections of processes running as uid to
// 127.0.0.1:from through 127.0.0.1:to, until the test ends.
func redirect(t *testing.T, uid, from, to int) {
	rule := []string{"OUTPUT", "-t", "nat", "-p", "tcp", "-d", "127.0.0.1", "--dport", fmt.Sprint(from),
		"-m", "owner", "--uid-owner", fmt.Sprint(uid), "-m", "comment", "--comment", "scc-fault-suite",
		"-j", "DNAT", "--to-destination", fmt.Sprint("127.0.0.1:", to)}
	if out, err := exec.Command("iptables", append([]string{"-I"}, rule...)...).CombinedOutput(); err != nil {
		t.Fatalf("iptables: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("iptables", append([]string{"-D"}, rule...)...).CombinedOutput(); err != nil {
			t.Errorf("iptables -D: %v: %s", err, strings.TrimSpace(string(out)))
		}
	})
}
