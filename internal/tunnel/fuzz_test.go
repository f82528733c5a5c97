package tunnel

import (
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"
)

// FuzzSession feeds a worker's session whatever a gateway could send:
// the session must end (or go on) without a panic, and a stream's bytes
// never exceed what its window allowed (push refuses them).
func FuzzSession(f *testing.F) {
	open := func(b []byte, id uint32) []byte { return AppendHeader(b, Open, id, 0) }
	f.Add(AppendData(open(nil, 1), 1, []byte("GET / HTTP/1.1\r\n\r\n")))
	f.Add(AppendHeader(AppendData(open(nil, 1), 1, []byte("hello")), Fin, 1, 0))
	f.Add(AppendHeader(open(open(nil, 1), 2), Reset, 1, 0))
	f.Add(AppendHeader(open(nil, 3), Window, 3, 1000))
	f.Add(AppendHeader(nil, Data, 1, 70000))
	f.Add(AppendData(open(nil, 1), 1, make([]byte, InitialWindow+1)))
	f.Add([]byte{Open, 0, 0, 0, 1, 0, 0})
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		l := NewListener(quiet)
		defer l.Close()
		worker, gw := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- l.Serve(worker) }()
		go func() { // the worker's side of each stream: read, answer, close
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					buf := make([]byte, 512)
					c.SetDeadline(time.Now().Add(time.Second))
					for {
						if _, err := c.Read(buf); err != nil {
							break
						}
						if _, err := c.Write([]byte("ok")); err != nil {
							break
						}
					}
					c.Close()
				}()
			}
		}()
		go io.Copy(io.Discard, gw)
		go func() {
			gw.Write(b)
			gw.Close()
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("the session did not end when the gateway closed\n%s", buf[:runtime.Stack(buf, true)])
		}
	})
}
