package ws

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// socketPair returns the two ends of a connected Unix socket pair: the
// first is a real socket (the reader's raw path), as a TCP connection is.
func socketPair(t testing.TB) (server, client *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	server, client = conn(fds[0]), conn(fds[1])
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// drain reads (and discards) what the server writes to the client end.
func drain(c net.Conn) { go io.Copy(io.Discard, c) }

func TestReaderPaths(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 5000) // 80 KB: bigger than the read buffer
	mid := bytes.Repeat([]byte("x"), 300)
	var stream []byte
	stream = append(stream, f(OpText, "hello").encode()...)
	stream = append(stream, fr{op: OpText, payload: mid, length: -1}.encode()...)
	stream = append(stream, f(OpText, "frag-").cont().encode()...)
	stream = append(stream, f(OpPing, "p1").encode()...)
	stream = append(stream, f(OpContinuation, "ment").cont().encode()...)
	stream = append(stream, f(OpContinuation, "ed").encode()...)
	stream = append(stream, f(OpPong, "").encode()...)
	stream = append(stream, fr{op: OpBinary, payload: big, length: -1}.encode()...)
	stream = append(stream, f(OpText, "").encode()...)
	stream = append(stream, closeFrame(4321, "bye").encode()...)
	for _, plain := range []bool{false, true} {
		server, client := socketPair(t)
		var nc net.Conn = server
		if plain {
			nc = struct{ net.Conn }{server} // hides the RawConn, as TLS would
		}
		c := NewConn(nc, 1<<20, false)
		if (c.rd.raw == nil) != plain {
			t.Fatalf("raw path: %v, want %v", c.rd.raw != nil, !plain)
		}
		go func() {
			// One byte at a time for the first part, then the rest at once.
			for _, b := range stream[:40] {
				client.Write([]byte{b})
				time.Sleep(100 * time.Microsecond)
			}
			client.Write(stream[40:])
		}()
		out := make(chan []string, 1)
		go func() { out <- readAll(client, bufio.NewReader(client), 5*time.Second) }()
		for _, want := range [][]byte{[]byte("hello"), mid, []byte("frag-mented"), big, {}} {
			_, got, err := c.rd.Next()
			if err != nil {
				t.Fatalf("plain=%v: %v", plain, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("plain=%v: got %d bytes %.20q, want %d bytes %.20q", plain, len(got), got, len(want), want)
			}
		}
		_, _, err := c.rd.Next()
		var ce *CloseError
		if !errors.As(err, &ce) || ce.Code != 4321 || ce.Reason != "bye" || !ce.Remote {
			t.Fatalf("plain=%v: close: %v", plain, err)
		}
		if !plain && c.rd.bp != nil {
			t.Fatal("buffer held after the last message")
		}
		server.Close()
		if got := <-out; len(got) != 2 || got[0] != "pong:p1" || got[1] != "close:4321" {
			t.Fatalf("plain=%v: the server sent %q", plain, got)
		}
	}
}

// An idle connection holds no read buffer, and neither does one waiting
// for the rest of a payload that a header declared. (The reader runs on
// the test's goroutine: a read deadline makes Next return once it has
// parked.)
func TestReaderHoldsLittle(t *testing.T) {
	server, client := socketPair(t)
	drain(client)
	c := NewConn(server, 1<<20, false)
	client.Write(f(OpText, "one").encode())
	if _, m, err := c.rd.Next(); err != nil || string(m) != "one" {
		t.Fatalf("%q %v", m, err)
	}
	parked := func(what string) {
		t.Helper()
		_ = server.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		if _, _, err := c.rd.Next(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: %v, want the deadline", what, err)
		}
		if c.rd.bp != nil {
			t.Fatalf("%s: the reader holds its buffer", what)
		}
		_ = server.SetReadDeadline(time.Time{})
	}
	parked("idle")
	// 1 MiB declared, 10 bytes sent.
	client.Write(fr{op: OpBinary, payload: bytes.Repeat([]byte("z"), 10), length: 1 << 20}.encode()[:14+4+10])
	parked("waiting for a payload")
}

func TestUnmask(t *testing.T) {
	key := uint32(0xf73c9a12)
	for n := 0; n < 40; n++ {
		for off := 0; off < 4; off++ {
			p := bytes.Repeat([]byte{0xa5}, n)
			unmask(rotateKey(key, off), p)
			for i, c := range p {
				if want := 0xa5 ^ byte(key>>(8*((i+off)%4))); c != want {
					t.Fatalf("n=%d off=%d i=%d: %x want %x", n, off, i, c, want)
				}
			}
		}
	}
}

// The streaming validator agrees with utf8.Valid on every split of every
// input into two pieces, and on byte-by-byte input.
func TestUTF8Stream(t *testing.T) {
	inputs := []string{"", "a", "κόσμε", "\xce", "\xce\xba\xe1", "\xed\xa0\x80", "\xed\x9f\xbf", "\xf4\x8f\xbf\xbf",
		"\xf4\x90\x80\x80", "\xf0\x8f\xbf\xbf", "\xf0\x90\x80\x80", "\xe0\x9f\xbf", "\xe0\xa0\x80", "\xc1\xbf", "\xc2\x80",
		"\x80", "\xbf\xbf", "a\xffb", "\xef\xbf\xbd", "hello \xf0\x9f\x98\x80 world", "\xf0\x9f\x98", "\xf0\x9f\x98\x80\x80"}
	for _, s := range inputs {
		want := utf8.ValidString(s)
		for cut := 0; cut <= len(s); cut++ {
			var u utf8Stream
			got := u.write([]byte(s[:cut])) && u.write([]byte(s[cut:])) && u.done()
			if got != want {
				t.Errorf("%q cut at %d: %v, want %v", s, cut, got, want)
			}
		}
		var u utf8Stream
		ok := true
		for i := 0; i < len(s) && ok; i++ {
			ok = u.write([]byte{s[i]})
		}
		if got := ok && u.done(); got != want {
			t.Errorf("%q byte by byte: %v, want %v", s, got, want)
		}
	}
}

func FuzzUTF8Stream(fz *testing.F) {
	fz.Add([]byte("κόσμε"), uint8(3))
	fz.Add([]byte("\xed\xa0\x80"), uint8(1))
	fz.Fuzz(func(t *testing.T, p []byte, cut uint8) {
		c := int(cut) % (len(p) + 1)
		var u utf8Stream
		got := u.write(p[:c]) && u.write(p[c:]) && u.done()
		if got != utf8.Valid(p) {
			t.Fatalf("%q cut at %d: %v", p, c, got)
		}
	})
}

// outcome is what a reader made of a byte stream: its messages, then how
// reading ended ("eof", "close:<code>" for the peer's close, "fail:<why>").
type outcome struct {
	msgs []string
	end  string
}

func describe(op int, p []byte) string { return strconv.Itoa(op) + ":" + string(p) }

const fuzzLimit = 4096

func ours(t *testing.T, input []byte) outcome {
	server, client := socketPair(t)
	drain(client)
	c := NewConn(server, fuzzLimit, false)
	go func() { client.Write(input); client.CloseWrite() }()
	var o outcome
	for {
		op, m, err := c.rd.Next()
		if err != nil {
			var ce *CloseError
			switch {
			case errors.As(err, &ce) && ce.Remote:
				o.end = "close:" + strconv.Itoa(ce.Code)
			case errors.As(err, &ce):
				o.end = "fail:" + ce.Reason
			case errors.Is(err, io.EOF):
				o.end = "eof"
			default:
				t.Fatalf("ours: %v", err)
			}
			return o
		}
		o.msgs = append(o.msgs, describe(op, m))
	}
}

// hijacker lets gorilla's Upgrader take over a connection without an HTTP
// server.
type hijacker struct {
	h  http.Header
	nc net.Conn
}

func (w *hijacker) Header() http.Header         { return w.h }
func (w *hijacker) Write(b []byte) (int, error) { return len(b), nil }
func (w *hijacker) WriteHeader(int)             {}
func (w *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.nc, bufio.NewReadWriter(bufio.NewReader(w.nc), bufio.NewWriter(w.nc)), nil
}

func theirs(t *testing.T, input []byte) outcome {
	server, client := socketPair(t)
	drain(client)
	req := &http.Request{Method: "GET", Header: http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"},
		"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	c, err := up.Upgrade(&hijacker{h: http.Header{}, nc: server}, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(fuzzLimit)
	go func() { client.Write(input); client.CloseWrite() }()
	var o outcome
	for {
		op, m, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			switch {
			case errors.As(err, &ce) && ce.Code == websocket.CloseAbnormalClosure:
				o.end = "eof" // gorilla's name for EOF, inside a frame or between them
			case errors.As(err, &ce):
				o.end = "close:" + strconv.Itoa(ce.Code)
			default:
				o.end = "fail:" + err.Error()
			}
			return o
		}
		o.msgs = append(o.msgs, describe(op, m))
	}
}

// FuzzReaderVsGorilla feeds the same client byte stream to our reader and
// to gorilla/websocket's, which the Go client uses and the worker used
// before: both must yield the same messages, then end the same way (a
// clean EOF, the same close code from the peer, or both failing). Where
// the two differ on purpose, ours is the stricter, as RFC 6455 asks:
//   - a text message that is not UTF-8 fails ours (1007); gorilla passes
//     it on;
//   - a close frame of one byte fails ours (1002); gorilla reads it as a
//     close without a code;
//   - close code 1014 (Bad Gateway, registered since) is a close for ours,
//     as for Node's ws; gorilla 1.5.3 refuses it.
func FuzzReaderVsGorilla(fz *testing.F) {
	for _, seed := range [][]fr{
		{f(OpText, "hello")},
		{f(OpText, "frag").cont(), f(OpPing, "p"), f(OpContinuation, "ment")},
		{f(OpBinary, "\xff\xfe"), closeFrame(1000, "bye")},
		{f(OpText, "\xce\xba\xe1").cont(), f(OpContinuation, "\xbd\xb9")},
		{f(OpText, "ok"), f(OpText, "\xed\xa0\x80")},
		{f(OpText, "a").cont(), {op: OpContinuation, length: 1<<63 - 1}},
		{{op: OpText, length: -1 << 63}},
		{{op: OpText, payload: []byte("abc"), length: 1 << 20}},
		{f(OpText, string(bytes.Repeat([]byte("x"), fuzzLimit)))},
		{f(OpText, string(bytes.Repeat([]byte("x"), fuzzLimit+1)))},
		{f(OpClose, "\x03")},
		{closeFrame(1005, "")},
		{closeFrame(3000, "\xff")},
		{f(OpText, "x").rsvs(0x40)},
		{f(OpPing, "a").cont()},
		{{op: OpText, payload: []byte("x"), unmask: true, length: -1}},
	} {
		var b []byte
		for _, x := range seed {
			b = append(b, x.encode()...)
		}
		fz.Add(b)
	}
	fz.Fuzz(func(t *testing.T, input []byte) {
		a, g := ours(t, input), theirs(t, input)
		if same(a, g) {
			return
		}
		t.Fatalf("input %q\nours:    %q then %s\ngorilla: %q then %s", input, a.msgs, a.end, g.msgs, g.end)
	})
}

func same(a, g outcome) bool {
	n := len(a.msgs)
	if len(g.msgs) < n {
		return false
	}
	for i := range n {
		if a.msgs[i] != g.msgs[i] {
			return false
		}
	}
	switch {
	case a.end == "fail:invalid UTF-8 in a text message":
		// Ours stopped at a text message that is not UTF-8: gorilla's next
		// message must be that one, or gorilla ended before completing it.
		if len(g.msgs) > n {
			m := g.msgs[n]
			return strings.HasPrefix(m, "1:") && !utf8.ValidString(m[2:])
		}
		return true
	case len(g.msgs) != n:
		return false
	case a.end == "fail:close frame of one byte":
		return g.end == "close:1005"
	case a.end == "close:1014":
		return g.end == "fail:websocket: bad close code 1014"
	case strings.HasPrefix(a.end, "fail:"):
		// Gorilla may need more bytes than the input has to see the
		// violation ours saw (ours checks a header as soon as each part is
		// in); the reverse would make ours the laxer and fails.
		return strings.HasPrefix(g.end, "fail:") || g.end == "eof"
	}
	return a.end == g.end
}
