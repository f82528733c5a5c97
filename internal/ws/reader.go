package ws

import (
	"encoding/binary"
	"errors"
	"io"
	"math/bits"
	"net"
	"sync"
	"syscall"
	"unicode/utf8"
)

// Reader reads one client's frames (RFC 6455 section 5), for two reasons
// its own and not a library's, both per connection:
//
//   - An idle connection holds no read buffer. Bytes are read into a
//     pooled buffer that goes back to the pool whenever it is empty, so a
//     connection waiting for its client costs no buffer at all.
//   - An idle connection's goroutine waits with a shallow stack: it parks
//     in the runtime's poller straight from Next (syscall.RawConn), not
//     under a frame reader and a bufio.Reader.
//
// A message is built in a buffer of its own (handlers may keep it) that
// grows as its bytes arrive: a header that declares a megabyte and sends
// nothing costs nothing.
type Reader struct {
	c   *Conn
	nc  net.Conn
	raw syscall.RawConn // nil when nc is not a plain socket (TLS)
	// waiter, when nc has one, is waited on before a read takes the
	// buffer (a tunnel stream: an idle one then holds no buffer either).
	waiter interface{ WaitReadable() error }
	limit  int64

	bp   *[]byte // pooled buffer, held only while it has unread bytes
	r, w int     // unread bytes are (*bp)[r:w]

	yield bool
	text  utf8Stream

	// The RawConn callback's arguments and results (a method value made
	// once, so a read allocates nothing).
	readFn func(fd uintptr) bool
	dst    []byte // read into dst instead of the buffer
	n      int
	err    error
}

// readBufSize is the pooled read buffer.
const readBufSize = 8 << 10

// firstChunk is the most a message buffer starts with before its bytes
// arrive; it then at most doubles with each read.
const firstChunk = 4 << 10

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

func newReader(c *Conn, limit int64) *Reader {
	rd := &Reader{c: c, nc: c.nc, limit: limit}
	if sc, ok := rd.nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			rd.raw = raw
			rd.readFn = rd.sysRead
		}
	}
	if w, ok := rd.nc.(interface{ WaitReadable() error }); ok {
		rd.waiter = w
	}
	return rd
}

// NewConn makes a Conn of a connection whose WebSocket handshake is done,
// reading messages up to limit bytes; compressed says permessage-deflate
// was agreed. (Upgrade does this for an HTTP request.)
func NewConn(nc net.Conn, limit int64, compressed bool) *Conn {
	c := &Conn{nc: nc, compress: compressed}
	c.rd = newReader(c, limit)
	return c
}

// SetLimit changes the largest message Next accepts (for example from a
// small limit before the application's handshake to the full one after).
// It must be called on the reading goroutine.
func (rd *Reader) SetLimit(n int64) { rd.limit = n }

// Yield makes the next Next return ErrYield, once, instead of waiting for
// the client when nothing is buffered: the caller continues reading on a
// fresh goroutine whose stack is small again.
func (rd *Reader) Yield() { rd.yield = true }

// sysRead is the RawConn callback: one read(2). On EAGAIN it lets go of
// an empty buffer before the goroutine parks.
func (rd *Reader) sysRead(fd uintptr) bool {
	p := rd.dst
	if p == nil {
		if rd.bp == nil {
			rd.bp = readBufs.Get().(*[]byte)
		}
		p = (*rd.bp)[rd.w:]
	}
	for {
		n, err := syscall.Read(int(fd), p)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			rd.release()
			return false
		case nil:
			rd.n, rd.err = n, nil
			if n == 0 {
				rd.err = io.EOF
			}
		default:
			rd.n, rd.err = 0, err
		}
		return true
	}
}

// release returns the buffer to the pool when it holds nothing unread.
func (rd *Reader) release() {
	if rd.bp != nil && rd.r == rd.w {
		readBufs.Put(rd.bp)
		rd.bp, rd.r, rd.w = nil, 0, 0
	}
}

// Drop gives the buffer back when the reader is done with the connection.
func (rd *Reader) Drop() {
	rd.r = rd.w
	rd.release()
}

// read reads at least one byte into p, or into the buffer when p is nil.
func (rd *Reader) read(p []byte) (int, error) {
	if rd.raw != nil {
		rd.dst = p
		err := rd.raw.Read(rd.readFn)
		rd.dst = nil
		if err != nil {
			return 0, err
		}
		return rd.n, rd.err
	}
	if p == nil {
		if rd.waiter != nil {
			rd.release()
			if rd.bp == nil {
				if err := rd.waiter.WaitReadable(); err != nil {
					return 0, err
				}
			}
		}
		if rd.bp == nil {
			rd.bp = readBufs.Get().(*[]byte)
		}
		p = (*rd.bp)[rd.w:]
	}
	n, err := rd.nc.Read(p)
	if n > 0 {
		err = nil
	} else if err == nil {
		err = io.ErrNoProgress
	}
	return n, err
}

// need makes n (<= readBufSize) unread bytes available in the buffer.
func (rd *Reader) need(n int) error {
	for rd.w-rd.r < n {
		if rd.bp != nil && rd.r > 0 && len(*rd.bp)-rd.r < n {
			copy(*rd.bp, (*rd.bp)[rd.r:rd.w])
			rd.w -= rd.r
			rd.r = 0
		}
		m, err := rd.read(nil)
		if err != nil {
			return err
		}
		rd.w += m
	}
	return nil
}

// header is one frame's header.
type header struct {
	fin, rsv1 bool
	op        int
	size      int64 // < 2^63
	key       uint32
}

// readHeader reads a frame header, failing the connection on what RFC
// 6455 forbids a client to send as soon as the first two bytes tell.
// inMessage says whether a fragmented message is under way, msgLen how
// many of its bytes came before this frame.
func (rd *Reader) readHeader(inMessage bool, msgLen int64) (header, error) {
	if err := rd.need(2); err != nil {
		return header{}, err
	}
	b := (*rd.bp)[rd.r:rd.w]
	h := header{fin: b[0]&finBit != 0, rsv1: b[0]&rsv1Bit != 0, op: int(b[0] & 0x0f)}
	len7 := int64(b[1] & 0x7f)
	switch {
	case b[0]&0x30 != 0 || (h.rsv1 && !rd.c.compress):
		return h, rd.fail(CloseProtocolError, "reserved bits set")
	case h.op == OpClose || h.op == OpPing || h.op == OpPong:
		if !h.fin || len7 > 125 {
			return h, rd.fail(CloseProtocolError, "fragmented or oversized control frame")
		}
		if h.rsv1 {
			return h, rd.fail(CloseProtocolError, "RSV1 set on a control frame")
		}
	case h.op == OpContinuation:
		if !inMessage {
			return h, rd.fail(CloseProtocolError, "continuation frame without a message")
		}
		if h.rsv1 {
			return h, rd.fail(CloseProtocolError, "RSV1 set on a continuation frame")
		}
	case h.op == OpText || h.op == OpBinary:
		if inMessage {
			return h, rd.fail(CloseProtocolError, "new message inside a fragmented one")
		}
	default:
		return h, rd.fail(CloseProtocolError, "unknown opcode")
	}
	if b[1]&0x80 == 0 {
		return h, rd.fail(CloseProtocolError, "client frame not masked")
	}
	// The length is checked as soon as it is in, before the masking key.
	n := 2
	h.size = len7
	switch h.size {
	case 126:
		n = 4
	case 127:
		n = 10
	}
	if err := rd.need(n); err != nil {
		return h, err
	}
	b = (*rd.bp)[rd.r:rd.w]
	switch n {
	case 4:
		h.size = int64(binary.BigEndian.Uint16(b[2:]))
	case 10:
		u := binary.BigEndian.Uint64(b[2:])
		if u>>63 != 0 {
			return h, rd.fail(CloseProtocolError, "payload length with the high bit set")
		}
		h.size = int64(u)
	}
	// len(msg) <= limit always holds, so the subtraction cannot go below
	// zero and nothing can overflow.
	if h.op < OpClose && h.size > rd.limit-msgLen {
		return h, rd.fail(CloseMessageTooBig, "message too big")
	}
	if err := rd.need(n + 4); err != nil {
		return h, err
	}
	h.key = binary.LittleEndian.Uint32((*rd.bp)[rd.r+n:])
	rd.r += n + 4
	return h, nil
}

// Next returns the next data message (OpText or OpBinary, a compressed one
// inflated), answering pings and the peer's close frame on the way. It
// returns a *CloseError when reading is over by a close frame: the peer's
// (Remote), or ours after a protocol violation (1002), invalid UTF-8 in a
// text message or close reason (1007), or a message over the limit
// (1009); any other error is the connection's. After Yield it may return
// ErrYield.
func (rd *Reader) Next() (op int, msg []byte, err error) {
	if rd.yield && rd.r == rd.w {
		rd.yield = false
		rd.release()
		return 0, nil, ErrYield
	}
	// Wait for the client here rather than deeper down: an idle connection
	// parks with as shallow a stack as it can (2 KiB, not 4).
	if rd.r == rd.w {
		if err := rd.need(1); err != nil {
			return 0, nil, err
		}
	}
	compressed := false
	for {
		h, err := rd.readHeader(op != 0, int64(len(msg)))
		if err != nil {
			return 0, nil, err
		}
		switch h.op {
		case OpClose, OpPing, OpPong:
			if err := rd.control(h); err != nil {
				rd.release()
				return 0, nil, err
			}
			continue
		case OpText, OpBinary:
			op, compressed = h.op, h.rsv1
		}
		validate := op == OpText && !compressed
		if msg, err = rd.payload(msg, h, validate); err != nil {
			return 0, nil, err
		}
		if !h.fin {
			continue
		}
		rd.release()
		if compressed {
			if msg, err = inflate(msg, rd.limit); err != nil {
				var ce *CloseError
				if errors.As(err, &ce) {
					return 0, nil, rd.fail(ce.Code, ce.Reason)
				}
				return 0, nil, rd.fail(CloseInvalidPayload, "bad deflate data")
			}
			if op == OpText && !utf8.Valid(msg) {
				return 0, nil, rd.fail(CloseInvalidPayload, "invalid UTF-8 in a text message")
			}
		} else if validate && !rd.text.done() {
			return 0, nil, rd.fail(CloseInvalidPayload, "invalid UTF-8 in a text message")
		}
		return op, msg, nil
	}
}

// payload appends a frame's h.size payload bytes to msg, unmasked, growing
// msg only as bytes arrive, and checks text as it comes.
func (rd *Reader) payload(msg []byte, h header, validate bool) ([]byte, error) {
	pos := 0 // offset in the frame, for the masking key
	for left := h.size; left > 0; {
		if len(msg) == cap(msg) {
			buffered := int64(rd.w - rd.r)
			grow := min(left, max(int64(len(msg)), firstChunk, buffered))
			msg = append(msg, make([]byte, grow)...)[:len(msg)]
		}
		dst := msg[len(msg):min(int64(cap(msg)), int64(len(msg))+left)]
		var n int
		if rd.bp != nil && rd.r < rd.w {
			n = copy(dst, (*rd.bp)[rd.r:rd.w])
			rd.r += n
		} else {
			m, err := rd.read(dst)
			if err != nil {
				return nil, err
			}
			n = m
		}
		chunk := dst[:n]
		unmask(rotateKey(h.key, pos), chunk)
		pos += n
		left -= int64(n)
		msg = msg[:len(msg)+n]
		if validate && !rd.text.write(chunk) {
			return nil, rd.fail(CloseInvalidPayload, "invalid UTF-8 in a text message")
		}
	}
	if msg == nil {
		msg = []byte{}
	}
	return msg, nil
}

// control handles a ping, pong or close frame from the client.
func (rd *Reader) control(h header) error {
	if err := rd.need(int(h.size)); err != nil {
		return err
	}
	payload := (*rd.bp)[rd.r : rd.r+int(h.size)]
	rd.r += int(h.size)
	unmask(h.key, payload)
	switch h.op {
	case OpPing:
		if err := rd.c.writeControl(OpPong, payload, true); err != nil && err != ErrCloseSent {
			return err
		}
	case OpClose:
		code, text := CloseNoStatus, ""
		switch {
		case len(payload) == 1:
			return rd.fail(CloseProtocolError, "close frame of one byte")
		case len(payload) >= 2:
			code = int(binary.BigEndian.Uint16(payload))
			if !ValidCloseCode(code) {
				return rd.fail(CloseProtocolError, "invalid close code")
			}
			if !utf8.Valid(payload[2:]) {
				return rd.fail(CloseInvalidPayload, "invalid UTF-8 in the close reason")
			}
			text = string(payload[2:])
		}
		// Echo the code unless our close frame went first (then this is
		// its answer and the handshake is complete).
		_ = rd.c.writeControl(OpClose, closeBody(code, ""), true)
		return &CloseError{Code: code, Reason: text, Remote: true}
	}
	return nil // pongs need no answer
}

// fail sends our close frame for a broken input and returns the error
// that ends reading.
func (rd *Reader) fail(code int, reason string) error {
	_ = rd.c.writeControl(OpClose, closeBody(code, reason), true)
	return &CloseError{Code: code, Reason: reason}
}

// rotateKey is the masking key for bytes that start at offset off of
// their frame's payload.
func rotateKey(key uint32, off int) uint32 { return bits.RotateLeft32(key, -8*(off&3)) }

// unmask XORs p with a masking key (as read little-endian), eight bytes
// at a time.
func unmask(key uint32, p []byte) {
	k8 := uint64(key) | uint64(key)<<32
	i := 0
	for ; len(p)-i >= 8; i += 8 {
		binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^k8)
	}
	for ; i < len(p); i++ {
		p[i] ^= byte(key >> (8 * uint(i&3)))
	}
}
