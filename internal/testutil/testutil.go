// Package testutil holds helpers shared by the project's tests: polling
// for a condition with a deadline, and a raw WebSocket peer that speaks the
// SocketCluster protocol frame by frame.
package testutil

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Eventually polls cond every few milliseconds until it holds or timeout
// passes, then fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// EventuallyNil polls f until it returns nil (every 50 ms at first,
// backing off to every 500 ms); past within, the test fails with what and
// f's last error.
func EventuallyNil(t testing.TB, within time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	pause := 50 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(pause)
		pause = min(pause*3/2, 500*time.Millisecond)
	}
}

// Peer is a raw WebSocket client for protocol tests: it sends exactly the
// text given and returns exactly what arrives (batches are split). A
// background goroutine reads, so waiting for "nothing" is harmless.
type Peer struct {
	t       testing.TB
	Conn    *websocket.Conn
	msgs    chan string
	err     error // final read error, valid once msgs is closed
	pending []string
}

// DialPeer connects to url.
func DialPeer(t testing.TB, url string) *Peer {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return NewPeer(t, c)
}

// NewPeer wraps an open connection.
func NewPeer(t testing.TB, c *websocket.Conn) *Peer {
	p := &Peer{t: t, Conn: c, msgs: make(chan string, 1<<16)}
	go func() {
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				p.err = err
				close(p.msgs)
				return
			}
			p.msgs <- string(b)
		}
	}()
	t.Cleanup(func() { c.Close() })
	return p
}

// Bind makes p report failures to t from now on (a peer that outlives one
// fuzz input reports to the input's t).
func (p *Peer) Bind(t testing.TB) { p.t = t }

// Send writes one text message.
func (p *Peer) Send(msg string) {
	p.t.Helper()
	if err := p.Conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		p.t.Fatalf("send %q: %v", msg, err)
	}
}

var errTimeout = errors.New("timeout")

// ReadRaw returns the next WebSocket message as sent, or an error (a
// *websocket.CloseError when the server closed).
func (p *Peer) ReadRaw(timeout time.Duration) (string, error) {
	select {
	case m, ok := <-p.msgs:
		if !ok {
			return "", p.err
		}
		return m, nil
	case <-time.After(timeout):
		return "", errTimeout
	}
}

func (p *Peer) next(timeout time.Duration, keepPings bool) (string, error) {
	for {
		if len(p.pending) > 0 {
			f := p.pending[0]
			p.pending = p.pending[1:]
			return f, nil
		}
		m, err := p.ReadRaw(timeout)
		if err != nil {
			return "", err
		}
		if !keepPings && (m == "" || m == "#1") {
			continue
		}
		if strings.HasPrefix(m, "[") {
			var arr []json.RawMessage
			if json.Unmarshal([]byte(m), &arr) == nil {
				for _, a := range arr {
					p.pending = append(p.pending, string(a))
				}
				continue
			}
		}
		return m, nil
	}
}

// Next returns the next frame, skipping pings; it fails the test on error.
func (p *Peer) Next() string {
	p.t.Helper()
	f, err := p.next(3*time.Second, false)
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	return f
}

// Expect reads the next frame and fails unless it equals want.
func (p *Peer) Expect(want string) {
	p.t.Helper()
	if got := p.Next(); got != want {
		p.t.Fatalf("got frame %s, want %s", got, want)
	}
}

// ExpectJSON reads the next frame and unmarshals it.
func (p *Peer) ExpectJSON() map[string]any {
	p.t.Helper()
	f := p.Next()
	var m map[string]any
	if err := json.Unmarshal([]byte(f), &m); err != nil {
		p.t.Fatalf("frame %q is not a JSON object: %v", f, err)
	}
	return m
}

// ExpectClose reads until the server closes and checks the close code.
func (p *Peer) ExpectClose(code int, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, err := p.next(time.Until(deadline), false)
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			if ce.Code != code {
				p.t.Fatalf("closed with %d (%q), want %d", ce.Code, ce.Text, code)
			}
			return
		}
		p.t.Fatalf("want close %d, got %v", code, err)
	}
}

// NoFrame checks that nothing but pings arrives for d.
func (p *Peer) NoFrame(d time.Duration) {
	p.t.Helper()
	f, err := p.next(d, false)
	if err == nil {
		p.t.Fatalf("unexpected frame %s", f)
	}
	if err != errTimeout {
		p.t.Fatalf("unexpected error %v", err)
	}
}

// Handshake sends #handshake (cid 1) with token (or null) and returns the
// response frame.
func (p *Peer) Handshake(token string) map[string]any {
	p.t.Helper()
	tok := "null"
	if token != "" {
		b, _ := json.Marshal(token)
		tok = string(b)
	}
	p.Send(`{"event":"#handshake","data":{"authToken":` + tok + `},"cid":1}`)
	for {
		m := p.ExpectJSON()
		if _, ok := m["rid"]; ok {
			return m
		}
	}
}

// WriteSection replaces what stands between the markers
// "<!-- name: written by by -->" and "<!-- /name -->" in the file at path
// (a doc a long test run writes its results into).
func WriteSection(t testing.TB, path, name, by, body string) {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	begin, end := "<!-- "+name+": written by "+by+" -->\n", "<!-- /"+name+" -->"
	i := bytes.Index(doc, []byte(begin))
	j := bytes.Index(doc, []byte(end))
	if i < 0 || j < i {
		t.Fatalf("%s has no %q and %q markers", path, begin, end)
	}
	out := slices.Concat(doc[:i], []byte(begin+body), doc[j:])
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}
