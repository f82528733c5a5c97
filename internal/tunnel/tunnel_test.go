package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// fakeGateway is the gateway's side of a session, written plainly: it
// sends frames and collects what the worker sends.
type fakeGateway struct {
	t      *testing.T
	nc     net.Conn
	frames chan frame
	ended  chan error // the worker's side closed the session
}

type frame struct {
	Header
	p []byte
}

// startSession serves a session on a listener and returns its gateway
// side.
func startSession(t *testing.T, l *Listener) *fakeGateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	served := make(chan error, 1)
	go func() {
		// The listener closes once it has accepted: closed when the dial
		// below returns, it could fail an Accept still to come.
		c, err := ln.Accept()
		ln.Close()
		if err != nil {
			served <- err
			return
		}
		served <- l.Serve(c)
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGateway{t: t, nc: nc, frames: make(chan frame, 1024), ended: make(chan error, 1)}
	go func() {
		hdr := make([]byte, HeaderSize)
		for {
			if _, err := io.ReadFull(nc, hdr); err != nil {
				close(g.frames)
				return
			}
			h, err := ParseHeader(hdr)
			if err != nil {
				t.Errorf("the worker sent a bad frame: %v", err)
				close(g.frames)
				return
			}
			f := frame{Header: h}
			if h.Type == Data {
				f.p = make([]byte, h.Length)
				if _, err := io.ReadFull(nc, f.p); err != nil {
					close(g.frames)
					return
				}
			}
			g.frames <- f
		}
	}()
	go func() { g.ended <- <-served }()
	t.Cleanup(func() { nc.Close() })
	return g
}

func (g *fakeGateway) send(typ byte, id uint32, n uint32, p []byte) {
	g.t.Helper()
	b := AppendHeader(nil, typ, id, n)
	if _, err := g.nc.Write(append(b, p...)); err != nil {
		g.t.Fatal(err)
	}
}

func (g *fakeGateway) data(id uint32, p []byte) { g.t.Helper(); g.nc.Write(AppendData(nil, id, p)) }

// next is the worker's next frame.
func (g *fakeGateway) next() frame {
	g.t.Helper()
	select {
	case f, ok := <-g.frames:
		if !ok {
			g.t.Fatal("the session ended")
		}
		return f
	case <-time.After(5 * time.Second):
		g.t.Fatal("no frame from the worker in 5s")
	}
	return frame{}
}

// read collects n bytes of Data on stream id, answering nothing.
func (g *fakeGateway) read(id uint32, n int) []byte {
	g.t.Helper()
	var got []byte
	for len(got) < n {
		f := g.next()
		if f.Type != Data || f.Stream != id {
			g.t.Fatalf("frame type %d on stream %d, want data on %d", f.Type, f.Stream, id)
		}
		got = append(got, f.p...)
	}
	return got
}

func accept(t *testing.T, l *Listener) *Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := l.Accept(); ch <- res{c, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.c.(*Conn)
	case <-time.After(5 * time.Second):
		t.Fatal("no stream accepted in 5s")
	}
	return nil
}

// TestStreamBothWays: a stream's bytes reach the worker's Conn in order
// and its writes reach the gateway; Close tells the gateway.
func TestStreamBothWays(t *testing.T) {
	l := NewListener(nil)
	g := startSession(t, l)
	g.send(Open, 1, 0, nil)
	g.data(1, []byte("GET / HTTP/1.1\r\n"))
	c := accept(t, l)
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "GET / HTTP/1.1\r\n" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 10_000) // 160 KB: three frames
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	if got := g.read(1, len(big)); !bytes.Equal(got, big) {
		t.Fatal("the worker's bytes arrived changed")
	}
	c.Close()
	if f := g.next(); f.Type != Close || f.Stream != 1 {
		t.Fatalf("after Close: frame type %d on %d, want Close on 1", f.Type, f.Stream)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v, want net.ErrClosed", err)
	}
}

// TestWindow: a worker's writes stop when the client's window is used up
// (a client that does not read holds back its own stream only) and go on
// when the gateway grants more; a write deadline ends the wait.
func TestWindow(t *testing.T) {
	l := NewListener(nil)
	g := startSession(t, l)
	g.send(Open, 1, 0, nil)
	g.send(Open, 2, 0, nil)
	slow, fast := accept(t, l), accept(t, l)

	wrote := make(chan int, 1)
	go func() {
		n, _ := slow.Write(make([]byte, InitialWindow+100))
		wrote <- n
	}()
	g.read(1, InitialWindow)
	select {
	case n := <-wrote:
		t.Fatalf("a write past the window returned (%d bytes) without a grant", n)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := fast.Write([]byte("other stream")); err != nil {
		t.Fatal(err)
	}
	if got := g.read(2, 12); string(got) != "other stream" {
		t.Fatalf("stream 2 got %q", got)
	}
	g.send(Window, 1, 100, nil)
	g.read(1, 100)
	if n := <-wrote; n != InitialWindow+100 {
		t.Fatalf("wrote %d", n)
	}

	slow.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := slow.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write with no window past its deadline: %v", err)
	}
}

// TestGrants: the worker grants back what it reads, a quarter window at
// a time, and a gateway that sends past the window ends the session.
func TestGrants(t *testing.T) {
	l := NewListener(nil)
	g := startSession(t, l)
	g.send(Open, 1, 0, nil)
	c := accept(t, l)
	g.data(1, make([]byte, GrantAt))
	if _, err := io.ReadFull(c, make([]byte, GrantAt)); err != nil {
		t.Fatal(err)
	}
	if f := g.next(); f.Type != Window || f.Stream != 1 || f.Length != GrantAt {
		t.Fatalf("frame type %d on %d of %d, want a grant of %d on 1", f.Type, f.Stream, f.Length, GrantAt)
	}
	// The window is whole again: InitialWindow more is allowed, one
	// byte beyond it is not.
	g.data(1, make([]byte, InitialWindow))
	g.data(1, []byte("x"))
	select {
	case err := <-g.ended:
		if !errors.Is(err, ErrProtocol) {
			t.Fatalf("session ended with %v, want a protocol error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a gateway past its window kept its session")
	}
	if _, err := io.ReadAll(c); !errors.Is(err, errSessionEnded) {
		t.Fatalf("a stream of the ended session reads %v", err)
	}
}

// TestFinAndReset: the client's EOF reaches the worker after its bytes;
// a reset fails the stream's reads and writes.
func TestFinAndReset(t *testing.T) {
	l := NewListener(nil)
	g := startSession(t, l)
	g.send(Open, 1, 0, nil)
	g.send(Open, 2, 0, nil)
	a, b := accept(t, l), accept(t, l)
	g.data(1, []byte("last words"))
	g.send(Fin, 1, 0, nil)
	got, err := io.ReadAll(a)
	if err != nil || string(got) != "last words" {
		t.Fatalf("read %q, %v before EOF", got, err)
	}
	if _, err := a.Write([]byte("still writable")); err != nil {
		t.Fatalf("write after the client's EOF: %v", err)
	}
	g.read(1, 14)
	g.send(Reset, 2, 0, nil)
	if _, err := b.Read(make([]byte, 1)); !errors.Is(err, ErrReset) {
		t.Fatalf("read after reset: %v", err)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, ErrReset) {
		t.Fatalf("write after reset: %v", err)
	}
	b.Close() // no Close frame for a stream the gateway reset
	a.Close()
	if f := g.next(); f.Type != Close || f.Stream != 1 {
		t.Fatalf("frame type %d on %d, want Close on 1", f.Type, f.Stream)
	}
}

// TestDeadlines: reads and WaitReadable end at the read deadline, which
// can be moved and removed.
func TestDeadlines(t *testing.T) {
	l := NewListener(nil)
	g := startSession(t, l)
	g.send(Open, 1, 0, nil)
	c := accept(t, l)
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	if err := c.WaitReadable(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("WaitReadable past the deadline: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	go func() {
		time.Sleep(50 * time.Millisecond)
		g.data(1, []byte("late"))
	}()
	if err := c.WaitReadable(); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	held := c.in != nil
	c.mu.Unlock()
	if !held {
		t.Fatal("WaitReadable returned with nothing to read")
	}
	buf := make([]byte, 8)
	n, _ := c.Read(buf)
	if string(buf[:n]) != "late" {
		t.Fatalf("read %q", buf[:n])
	}
	c.mu.Lock()
	held = c.in != nil
	c.mu.Unlock()
	if held {
		t.Fatal("a stream with nothing unread still holds a buffer")
	}

	// A reader parked with no deadline (a plain receive) still ends at a
	// deadline set while it waits.
	read := make(chan error, 1)
	go func() { _, err := c.Read(buf); read <- err }()
	time.Sleep(30 * time.Millisecond)
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	select {
	case err := <-read:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read parked before its deadline was set: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a deadline set while a read was parked did not end it")
	}
}

// TestProtocolErrors: a gateway breaking the framing rules loses its
// session, and every stream of it fails.
func TestProtocolErrors(t *testing.T) {
	cases := map[string][]byte{
		"unknown type":        AppendHeader(nil, 9, 1, 0),
		"stream 0":            AppendHeader(nil, Open, 0, 0),
		"data before open":    append(AppendHeader(nil, Data, 7, 1), 'x'),
		"ids going back":      AppendHeader(AppendHeader(nil, Open, 5, 0), Open, 3, 0),
		"oversized data":      AppendHeader(nil, Data, 1, MaxData+1),
		"close from gateway":  AppendHeader(AppendHeader(nil, Open, 1, 0), Close, 1, 0),
		"window past the max": AppendHeader(AppendHeader(nil, Open, 1, 0), Window, 1, MaxWindow),
		"length on a reset":   AppendHeader(AppendHeader(nil, Open, 1, 0), Reset, 1, 4),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			l := NewListener(nil)
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go io.Copy(io.Discard, c)
				}
			}()
			t.Cleanup(func() { l.Close() })
			g := startSession(t, l)
			g.nc.Write(b)
			select {
			case err := <-g.ended:
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("ended with %v, want a protocol error", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the session survived")
			}
		})
	}
}

// TestClosedListener: a stream opened after the listener closed is
// answered with Close at once (the gateway tries another worker).
func TestClosedListener(t *testing.T) {
	l := NewListener(nil)
	g := startSession(t, l)
	l.Close()
	g.send(Open, 1, 0, nil)
	if f := g.next(); f.Type != Close || f.Stream != 1 {
		t.Fatalf("frame type %d on %d, want Close on 1", f.Type, f.Stream)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on a closed listener: %v", err)
	}
}

// TestDialHandler: Dial's upgrade against Handler, with and without the
// token; a server without tunnels is ErrUnsupported.
func TestDialHandler(t *testing.T) {
	l := NewListener(nil)
	mux := http.NewServeMux()
	mux.Handle(Path, l.Handler("s3cret"))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	if _, err := Dial(ctx, addr, "wrong", time.Second); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a wrong token: %v, want 401", err)
	}
	nc, err := Dial(ctx, addr, "s3cret", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write(append(AppendHeader(nil, Open, 1, 0), AppendData(nil, 1, []byte("hi"))...))
	c := accept(t, l)
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}
	old := httptest.NewServer(http.NotFoundHandler())
	defer old.Close()
	if _, err := Dial(ctx, strings.TrimPrefix(old.URL, "http://"), "", time.Second); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("a server without tunnels: %v, want ErrUnsupported", err)
	}
}
