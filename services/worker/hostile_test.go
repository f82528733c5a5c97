package worker_test

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/services/worker"
)

// The hostile inputs of the worker edge: each goes to a server that also
// serves a watcher socket; after each, the server must still answer
// /healthz, complete a fresh client's handshake, and deliver to the
// watcher. Before internal/ws, the first case took the process down.

// rawFrame encodes one masked client frame; length < 0 declares
// len(payload), anything else is declared as is (and may lie).
func rawFrame(b0 byte, payload []byte, length int64) []byte {
	n := uint64(length)
	if length < 0 {
		n = uint64(len(payload))
	}
	return testutil.WSFrame(b0, payload, n, false)
}

func text(p string) []byte     { return rawFrame(0x81, []byte(p), -1) }
func textMore(p string) []byte { return rawFrame(0x01, []byte(p), -1) }
func cont(p string) []byte     { return rawFrame(0x80, []byte(p), -1) }
func contMore(p string) []byte { return rawFrame(0x00, []byte(p), -1) }
func closing(code int, reason string) []byte {
	return rawFrame(0x88, append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...), -1)
}

// rawDial upgrades a plain TCP connection to the server's endpoint.
func rawDial(t *testing.T, s *testServer, headers string) (net.Conn, *bufio.Reader) {
	t.Helper()
	addr := strings.TrimPrefix(s.HTTP, "http://")
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.Write([]byte("GET " + s.Config().Path + " HTTP/1.1\r\nHost: " + addr + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + headers + "\r\n"))
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return nc, br
}

// readFrames reads the server's frames until its close frame and returns
// the text messages before it and the close code (-1: no close frame).
func readFrames(nc net.Conn, br *bufio.Reader, timeout time.Duration) (msgs []string, code int) {
	_ = nc.SetReadDeadline(time.Now().Add(timeout))
	for {
		b0, p, err := testutil.ReadWSFrame(br)
		if err != nil {
			return msgs, -1
		}
		switch b0 & 0x0f {
		case 8:
			if len(p) < 2 {
				return msgs, 1005
			}
			return msgs, int(binary.BigEndian.Uint16(p))
		case 1:
			msgs = append(msgs, string(p))
		}
	}
}

const handshake = `{"event":"#handshake","data":{"authToken":null},"cid":1}`

func bomb() []byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	w.Write(make([]byte, 50<<20))
	w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

func TestHostileInputs(t *testing.T) {
	// The handshake timeout ends the case that declares a size and never
	// sends it; the others must finish their handshakes well within it,
	// even on a loaded machine (at 500 ms, one could be ended by 4005
	// before its own input was judged).
	s := startServer(t, worker.Config{HandshakeTimeout: 2 * time.Second, PerMessageDeflate: true}, echoSetup)
	watcher := s.connect(t)
	watcher.Send(`{"event":"#subscribe","data":{"channel":"watch"},"cid":2}`)
	watcher.Expect(`{"rid":2}`)
	other := s.connect(t)
	other.Send(`{"event":"#subscribe","data":{"channel":"lobby"},"cid":2}`)
	other.Expect(`{"rid":2}`)
	deflate := "Sec-WebSocket-Extensions: permessage-deflate\r\n"
	health := httptest.NewServer(s.HealthHandler(nil))
	defer health.Close()

	for i, c := range []struct {
		name    string
		headers string
		shake   bool   // complete the SocketCluster handshake first
		input   []byte // after the upgrade (and handshake)
		code    int    // the close code the server answers with
	}{
		// 21 bytes: a text frame without FIN, then a continuation declaring
		// 2^63-1 bytes. The sum overflowed, the check passed, the
		// allocation panicked on the reader goroutine: the process died.
		{"overflowing continuation length", "", false, append(textMore("a"), rawFrame(0x80, nil, 1<<63-1)...), 1009},
		{"overflowing continuation length after the handshake", "", true, append(textMore("a"), rawFrame(0x80, nil, 1<<63-1)...), 1009},
		{"64-bit length with the high bit set", "", false, []byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, 1002},
		{"64-bit length 2^64-1", "", false, []byte{0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, 1002},
		{"64-bit length just over the handshake limit", "", false, rawFrame(0x81, nil, 64<<10+1), 1009},
		{"64-bit length just over the payload limit", "", true, rawFrame(0x81, nil, 1<<20+1), 1009},
		// Declared 1 MiB and never sent: the handshake timeout ends it.
		{"declared size far above what is sent", "", false, rawFrame(0x81, []byte("{"), 64<<10)[:14+1], 4005},
		{"invalid UTF-8 split across fragments", "", true, append(append(textMore(`{"event":"echo","data":"\xce\xba\xe1`), contMore("\xbd")...), cont("\xed\xa0\x80\"}")...), 1007},
		{"invalid UTF-8 before the handshake", "", false, text("\xff\xfe"), 1007},
		{"deflate bomb", deflate, true, rawFrame(0xc1, bomb(), -1), 1009},
		{"deflate bomb before the handshake", deflate, false, rawFrame(0xc1, bomb(), -1), 1009},
		{"close code 1005", "", true, closing(1005, ""), 1002},
		{"close code 1006", "", true, closing(1006, ""), 1002},
		{"close code 5000", "", true, closing(5000, ""), 1002},
		{"close reason not UTF-8", "", true, closing(4000, "\xff"), 1007},
		{"close reason too long", "", true, closing(4000, strings.Repeat("x", 124)), 1002},
		{"unmasked frame", "", true, []byte{0x81, 0x01, 'x'}, 1002},
		{"reserved bits", "", true, rawFrame(0xf1, []byte("x"), -1), 1002},
		{"#publish of invalid UTF-8", "", true, text(`{"event":"#publish","data":{"channel":"watch","data":"` + "\xff\xfe" + `"},"cid":2}`), 1007},
	} {
		t.Run(c.name, func(t *testing.T) {
			nc, br := rawDial(t, s, c.headers)
			if c.shake {
				nc.Write(text(handshake))
			}
			nc.Write(c.input)
			msgs, code := readFrames(nc, br, 5*time.Second)
			if code != c.code {
				t.Errorf("closed with %d after %q, want %d", code, msgs, c.code)
			}
			nc.Close()
			stillServing(t, s, health.URL+"/healthz", watcher, i)
		})
	}
	watcher.NoFrame(100 * time.Millisecond) // nothing but what stillServing published
	other.NoFrame(10 * time.Millisecond)
	for _, reason := range []string{"bad_utf8", "bad_frame", "too_big"} {
		if got := metric(t, s, `scc_worker_rejected_frames_total{reason="`+reason+`"}`); got == "" || got == "0" {
			t.Errorf("rejected frames (%s): %q", reason, got)
		}
	}
}

// stillServing checks the server after a hostile input: health, a fresh
// handshake, and a delivery to the watcher.
func stillServing(t *testing.T, s *testServer, health string, watcher *testutil.Peer, i int) {
	t.Helper()
	resp, err := http.Get(health)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/healthz: %s", resp.Status)
	}
	fresh := s.connect(t)
	fresh.Send(`{"event":"echo","data":"alive","cid":2}`)
	fresh.Expect(`{"rid":2,"data":"alive"}`)
	fresh.Conn.Close()
	msg := `"after ` + strconv.Itoa(i) + `"`
	if err := s.Exchange().Publish(t.Context(), "watch", json.RawMessage(msg)); err != nil {
		t.Fatal(err)
	}
	watcher.Expect(`{"event":"#publish","data":{"channel":"watch","data":` + msg + `}}`)
}
