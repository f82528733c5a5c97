package ws

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// MaxHeader is the longest header of a server frame (unmasked, 64-bit
// length). Buffers handed to WriteFramed keep this much room in front.
const MaxHeader = 10

// Conn is the server side of one WebSocket connection. Its frames go
// straight to the socket; Reader reads them. No write sets a deadline: the
// owner polls WriteStarted and closes the connection when a write has
// been under way too long (one sweeper for every connection instead of a
// timer each).
type Conn struct {
	nc    net.Conn
	rd    *Reader
	since atomic.Int64 // unix nanos when the write under way began; 0: none

	mu        sync.Mutex // serializes writes; guards the fields below
	closeSent bool
	hdr       [MaxHeader]byte

	compress bool // permessage-deflate was negotiated
}

// NetConn is the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Reader is the connection's frame reader.
func (c *Conn) Reader() *Reader { return c.rd }

// Compressed reports whether permessage-deflate was negotiated.
func (c *Conn) Compressed() bool { return c.compress }

// WriteStarted is when the write under way began (unix nanoseconds), or 0.
func (c *Conn) WriteStarted() int64 { return c.since.Load() }

// CloseSent reports whether this side's close frame has been written.
func (c *Conn) CloseSent() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeSent
}

// putHeader writes the header of a final frame with first byte b0 (FIN,
// RSV1, opcode) and n bytes of payload at the end of dst (len(dst) >=
// MaxHeader) and returns where it starts.
func putHeader(dst []byte, b0 byte, n int) int {
	end := len(dst)
	switch {
	case n < 126:
		dst[end-2], dst[end-1] = b0, byte(n)
		return end - 2
	case n < 1<<16:
		dst[end-4], dst[end-3] = b0, 126
		binary.BigEndian.PutUint16(dst[end-2:], uint16(n))
		return end - 4
	default:
		dst[end-10], dst[end-9] = b0, 127
		binary.BigEndian.PutUint64(dst[end-8:], uint64(n))
		return end - 10
	}
}

const (
	finBit  = 0x80
	rsv1Bit = 0x40
)

// WriteFramed sends one data message whose payload is buf[MaxHeader:]; the
// header goes into the room in front, so header and payload leave in one
// write without a copy. (A compressed connection compresses the payload
// into a buffer of its own.)
func (c *Conn) WriteFramed(op int, buf []byte) error {
	if c.compress && len(buf)-MaxHeader >= compressMin {
		return c.writeCompressed(op, buf[MaxHeader:])
	}
	at := putHeader(buf[:MaxHeader], finBit|byte(op), len(buf)-MaxHeader)
	return c.send(buf[at:])
}

// send writes one whole frame, unless our close frame went first.
func (c *Conn) send(frame []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent {
		return ErrCloseSent
	}
	return c.write(frame)
}

// WriteMessage sends one data message of payload p.
func (c *Conn) WriteMessage(op int, p []byte) error {
	if c.compress && len(p) >= compressMin {
		return c.writeCompressed(op, p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent {
		return ErrCloseSent
	}
	return c.writeFrameLocked(finBit|byte(op), p)
}

// bigFrame is the payload size from which a frame leaves with its header
// in one writev instead of being copied behind it.
const bigFrame = 64 << 10

var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// writeFrameLocked writes one frame: header and payload in one write.
func (c *Conn) writeFrameLocked(b0 byte, p []byte) error {
	if len(p) >= bigFrame {
		at := putHeader(c.hdr[:], b0, len(p))
		bufs := net.Buffers{c.hdr[at:], p}
		c.since.Store(time.Now().UnixNano())
		_, err := bufs.WriteTo(c.nc)
		c.since.Store(0)
		return err
	}
	bp := frameBufs.Get().(*[]byte)
	b := append(append((*bp)[:0], make([]byte, MaxHeader)...), p...)
	at := putHeader(b[:MaxHeader], b0, len(p))
	err := c.write(b[at:])
	*bp = b[:0]
	frameBufs.Put(bp)
	return err
}

func (c *Conn) write(b []byte) error {
	c.since.Store(time.Now().UnixNano())
	_, err := c.nc.Write(b)
	c.since.Store(0)
	return err
}

// WritePing sends a WebSocket ping.
func (c *Conn) WritePing(p []byte) error { return c.writeControl(OpPing, p, true) }

// writeControl sends a control frame (payload cut to 125 bytes). With
// wait false it gives up at once when another write holds the connection.
func (c *Conn) writeControl(op int, p []byte, wait bool) error {
	if len(p) > 125 {
		p = p[:125]
	}
	if wait {
		c.mu.Lock()
	} else if !c.mu.TryLock() {
		return ErrBusy
	}
	defer c.mu.Unlock()
	if c.closeSent {
		return ErrCloseSent
	}
	if op == OpClose {
		c.closeSent = true
	}
	return c.writeFrameLocked(finBit|byte(op), p)
}

// WriteClose sends this side's close frame, once: code must pass
// ValidCloseCode; reason is cut to fit (CutReason). Nothing is written
// after it. The caller then reads until the peer's close frame (or a
// deadline) and closes the connection.
func (c *Conn) WriteClose(code int, reason string) error {
	if err := CheckCloseCode(code); err != nil {
		return err
	}
	return c.writeControl(OpClose, closeBody(code, reason), true)
}

// TryWriteClose is WriteClose that does not wait for a write under way
// (one blocked on a peer that does not read): the caller is about to cut
// the connection anyway and only says why when it can.
func (c *Conn) TryWriteClose(code int, reason string) error {
	if err := CheckCloseCode(code); err != nil {
		return err
	}
	return c.writeControl(OpClose, closeBody(code, reason), false)
}

// Close closes the network connection (no close handshake).
func (c *Conn) Close() error { return c.nc.Close() }
