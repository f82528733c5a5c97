package tunnel

// One stream, as the worker sees it: a net.Conn.

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// ErrReset is what a stream's reads and writes return once the gateway
// has said its client is gone.
var ErrReset = errors.New("tunnel: connection reset by the gateway's client")

// errSessionEnded is what a stream returns once its session has ended.
var errSessionEnded = errors.New("tunnel: session ended")

// inBufSize is a pooled inbound buffer's size; one a burst grew past it
// is left to the garbage collector.
const inBufSize = 16 << 10

// inBufs hold a stream's unread bytes, only while it has any: an idle
// stream holds no buffer.
var inBufs = sync.Pool{New: func() any { b := make([]byte, 0, inBufSize); return &b }}

// Conn is one stream of a session: a client connection the gateway
// carries. Reads return the client's bytes; writes go to the client. A
// write waits while the stream's window is used up (the client is not
// reading), as a socket write waits on a full buffer.
type Conn struct {
	s  *session
	id uint32

	mu        sync.Mutex
	in        *[]byte // unread bytes are (*in)[r:]; nil when none
	r         int
	eof       bool  // the client finished sending
	err       error // reset, closed, or the session ended
	closed    bool  // Close was called
	sendWin   int   // bytes this side may still send
	recvAvail int   // bytes the gateway may still send
	consumed  int   // bytes read and not yet granted back

	readable chan struct{} // cap 1: bytes, EOF or an error arrived
	writable chan struct{} // cap 1: window granted or an error
	rdl, wdl deadline
}

var _ net.Conn = (*Conn)(nil)

func newConn(s *session, id uint32) *Conn {
	return &Conn{s: s, id: id, sendWin: InitialWindow, recvAvail: InitialWindow,
		readable: make(chan struct{}, 1), writable: make(chan struct{}, 1)}
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Read reads the client's bytes.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		c.mu.Lock()
		if c.in != nil {
			n := copy(p, (*c.in)[c.r:])
			c.r += n
			if c.r == len(*c.in) {
				c.releaseIn()
			}
			c.consumed += n
			grant := 0
			if c.consumed >= GrantAt && c.err == nil && !c.eof {
				grant, c.consumed = c.consumed, 0
				c.recvAvail += grant
			}
			c.mu.Unlock()
			if grant > 0 {
				c.s.control(Window, c.id, uint32(grant))
			}
			return n, nil
		}
		err := c.readErr()
		c.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if err := c.waitReadable(); err != nil {
			return 0, err
		}
	}
}

// readErr is what a read returns with nothing buffered; nil: wait.
// c.mu is held.
func (c *Conn) readErr() error {
	switch {
	case c.err != nil:
		return c.err
	case c.eof:
		return io.EOF
	}
	return nil
}

// waitReadable waits for the next arrival or the read deadline. With no
// deadline (an idle socket's case) it is a plain receive, whose frames
// keep the parked goroutine's stack at its first 2 KiB (a select's
// would grow it to 4); SetReadDeadline wakes it to wait the other way.
func (c *Conn) waitReadable() error {
	exp := c.rdl.expired()
	if exp == neverExpires {
		<-c.readable
		return nil
	}
	select {
	case <-exp:
		return os.ErrDeadlineExceeded
	default:
	}
	select {
	case <-c.readable:
		return nil
	case <-exp:
		return os.ErrDeadlineExceeded
	}
}

// WaitReadable returns once a Read would not wait (bytes, EOF or an
// error are there), or at the read deadline. The WebSocket reader waits
// here before it takes a buffer, so an idle stream holds none.
func (c *Conn) WaitReadable() error {
	for {
		c.mu.Lock()
		ready := c.in != nil || c.readErr() != nil
		c.mu.Unlock()
		if ready {
			return nil
		}
		if err := c.waitReadable(); err != nil {
			return err
		}
	}
}

func (c *Conn) releaseIn() {
	if c.in == nil {
		return
	}
	if cap(*c.in) == inBufSize {
		*c.in = (*c.in)[:0]
		inBufs.Put(c.in)
	}
	c.in, c.r = nil, 0
}

// Write sends p to the client, waiting while the stream's window is used
// up.
func (c *Conn) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return written, err
		}
		if c.sendWin == 0 {
			c.mu.Unlock()
			select {
			case <-c.wdl.expired():
				return written, os.ErrDeadlineExceeded
			default:
			}
			select {
			case <-c.writable:
			case <-c.wdl.expired():
				return written, os.ErrDeadlineExceeded
			}
			continue
		}
		n := min(len(p), c.sendWin, MaxData)
		c.sendWin -= n
		c.mu.Unlock()
		if err := c.s.data(c.id, p[:n], &c.wdl); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// Close ends the stream: the gateway writes what it has for the client
// and closes the client's connection.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	tell := c.err == nil // a reset or ended session needs no word
	c.err = net.ErrClosed
	c.releaseIn()
	c.mu.Unlock()
	notify(c.readable)
	notify(c.writable)
	c.s.forget(c.id)
	if tell {
		c.s.control(Close, c.id, 0)
	}
	return nil
}

// fail ends the stream with err (the client reset it, or the session
// ended); reads and writes return err.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
		c.releaseIn()
	}
	c.mu.Unlock()
	notify(c.readable)
	notify(c.writable)
}

// push takes bytes the gateway sent. It reports false when they exceed
// what the stream granted (a protocol error).
func (c *Conn) push(p []byte) bool {
	c.mu.Lock()
	if len(p) > c.recvAvail {
		c.mu.Unlock()
		return false
	}
	c.recvAvail -= len(p)
	if c.err != nil { // closed here: the bytes have nowhere to go
		c.mu.Unlock()
		return true
	}
	if c.in == nil {
		c.in = inBufs.Get().(*[]byte)
	}
	*c.in = append(*c.in, p...)
	c.mu.Unlock()
	notify(c.readable)
	return true
}

// finish notes the client's EOF.
func (c *Conn) finish() {
	c.mu.Lock()
	c.eof = true
	c.mu.Unlock()
	notify(c.readable)
}

// grant adds to the send window; false: past MaxWindow.
func (c *Conn) grant(n uint32) bool {
	c.mu.Lock()
	c.sendWin += int(n)
	ok := c.sendWin <= MaxWindow
	c.mu.Unlock()
	notify(c.writable)
	return ok
}

// LocalAddr is the session's local address.
func (c *Conn) LocalAddr() net.Addr { return c.s.nc.LocalAddr() }

// RemoteAddr is the gateway's address: the peer a proxy-trust list
// (X-Forwarded-For) is checked against, as for a direct connection from
// the gateway.
func (c *Conn) RemoteAddr() net.Addr { return c.s.nc.RemoteAddr() }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	_ = c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline bounds reads (and WaitReadable).
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rdl.set(t)
	notify(c.readable) // a reader parked without a deadline waits again with it
	return nil
}

// SetWriteDeadline bounds writes.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.wdl.set(t)
	notify(c.writable) // a writer waiting for window waits again with it
	return nil
}

// deadline is a time after which a channel is closed; the zero value has
// none.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	ch    chan struct{} // closed when the deadline has passed
}

// set replaces the deadline; the zero time removes it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.ch // the timer fired (or is firing): wait until it closed ch
	}
	d.timer = nil
	if t.IsZero() {
		d.ch = nil // none: expired is neverExpires
		return
	}
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	select {
	case <-d.ch:
		d.ch = make(chan struct{}) // passed before: a fresh one
	default:
	}
	dur := time.Until(t)
	if dur <= 0 {
		close(d.ch)
		return
	}
	ch := d.ch
	d.timer = time.AfterFunc(dur, func() { close(ch) })
}

// neverExpires is the channel of a deadline never set.
var neverExpires = make(chan struct{})

// expired is closed once the deadline has passed.
func (d *deadline) expired() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ch == nil {
		return neverExpires
	}
	return d.ch
}
