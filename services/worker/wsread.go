package worker

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// The worker reads client frames itself (RFC 6455, section 5), for two
// reasons, both per connection:
//
//   - An idle socket holds no read buffer. Bytes are read into a pooled
//     buffer that goes back to the pool whenever it is empty, so a
//     connection waiting for its client costs no buffer at all.
//   - An idle socket's goroutine waits with a shallow stack: it parks in
//     the runtime's poller straight from readLoop (syscall.RawConn), not
//     under a frame reader and a bufio.Reader.
//
// A message is copied out of the buffer into one allocation of its exact
// size, because handlers and the broker may keep it.

// readBufSize is the pooled read buffer; bigger payloads are read straight
// into their message.
const readBufSize = 8 << 10

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// closeError is the peer's close frame.
type closeError struct {
	code int
	text string
}

func (e *closeError) Error() string {
	return "websocket: closed by the client: " + itoa(e.code) + " " + e.text
}

// errYield asks the reader to continue on a fresh goroutine.
var errYield = errors.New("websocket: reader hands over")

// errReadLimit is a message bigger than Config.MaxPayload.
var errReadLimit = errors.New("websocket: message over the read limit")

// errProtocol is a frame that breaks RFC 6455: the socket answers it with
// close code 1002.
type errProtocol string

func (e errProtocol) Error() string { return "websocket: protocol error: " + string(e) }

// wsReader reads one client's frames.
type wsReader struct {
	conn       net.Conn
	ws         controlWriter   // for control replies (pong, close echo)
	raw        syscall.RawConn // nil when conn is not a plain socket (TLS)
	maxPayload int64

	bp   *[]byte // pooled buffer, held only while it has unread bytes
	r, w int     // unread bytes are (*bp)[r:w]

	// yield makes next return errYield, once, instead of waiting for the
	// client when nothing is buffered (see Socket.readLoop).
	yield bool

	// The RawConn callback's arguments and results (a method value made
	// once, so a read allocates nothing).
	readFn func(fd uintptr) bool
	dst    []byte // read into dst instead of the buffer
	n      int
	err    error
}

// controlWriter sends control frames (a *wsConn).
type controlWriter interface {
	WriteControl(messageType int, data []byte, deadline time.Time) error
}

func newWSReader(conn net.Conn, ws controlWriter, maxPayload int64) *wsReader {
	rd := &wsReader{conn: conn, ws: ws, maxPayload: maxPayload}
	if sc, ok := rd.conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			rd.raw = raw
			rd.readFn = rd.sysRead
		}
	}
	return rd
}

// sysRead is the RawConn callback: one read(2). On EAGAIN it lets go of
// an empty buffer before the goroutine parks.
func (rd *wsReader) sysRead(fd uintptr) bool {
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
func (rd *wsReader) release() {
	if rd.bp != nil && rd.r == rd.w {
		readBufs.Put(rd.bp)
		rd.bp, rd.r, rd.w = nil, 0, 0
	}
}

// drop gives the buffer back when the reader is done with the connection.
func (rd *wsReader) drop() {
	rd.r = rd.w
	rd.release()
}

// read reads at least one byte into p, or into the buffer when p is nil.
func (rd *wsReader) read(p []byte) (int, error) {
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
		if rd.bp == nil {
			rd.bp = readBufs.Get().(*[]byte)
		}
		p = (*rd.bp)[rd.w:]
	}
	n, err := rd.conn.Read(p)
	if n > 0 {
		err = nil
	} else if err == nil {
		err = io.ErrNoProgress
	}
	return n, err
}

// need makes n (<= readBufSize) unread bytes available in the buffer.
func (rd *wsReader) need(n int) error {
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

// fill copies the payload's bytes into p, from the buffer first and then
// straight from the connection.
func (rd *wsReader) fill(p []byte) error {
	k := 0
	if rd.bp != nil {
		k = copy(p, (*rd.bp)[rd.r:rd.w])
		rd.r += k
	}
	for k < len(p) {
		n, err := rd.read(p[k:])
		if err != nil {
			return err
		}
		k += n
	}
	return nil
}

// next returns the next data message, answering pings and the peer's
// close frame on the way. A *closeError reports the peer's
// close; errReadLimit a message over maxPayload (after sending 1009);
// errProtocol a broken frame (after sending 1002).
func (rd *wsReader) next() ([]byte, error) {
	if rd.yield && rd.r == rd.w {
		rd.yield = false
		rd.release()
		return nil, errYield
	}
	var msg []byte
	fragmented := false
	for {
		if err := rd.need(2); err != nil {
			return nil, err
		}
		b := (*rd.bp)[rd.r:rd.w]
		fin, op := b[0]&0x80 != 0, int(b[0]&0x0f)
		if b[0]&0x70 != 0 {
			return nil, rd.protocolError("reserved bits set")
		}
		if b[1]&0x80 == 0 {
			return nil, rd.protocolError("client frame not masked")
		}
		hlen, size := 6, int64(b[1]&0x7f)
		switch size {
		case 126:
			hlen = 8
		case 127:
			hlen = 14
		}
		if err := rd.need(hlen); err != nil {
			return nil, err
		}
		b = (*rd.bp)[rd.r:rd.w]
		switch hlen {
		case 8:
			size = int64(binary.BigEndian.Uint16(b[2:]))
		case 14:
			u := binary.BigEndian.Uint64(b[2:])
			if u>>63 != 0 {
				return nil, rd.protocolError("payload length with the high bit set")
			}
			size = int64(u)
		}
		key := binary.LittleEndian.Uint32(b[hlen-4:])
		rd.r += hlen

		switch op {
		case opClose, opPing, opPong:
			if !fin || size > 125 {
				return nil, rd.protocolError("fragmented or oversized control frame")
			}
			if err := rd.need(int(size)); err != nil {
				return nil, err
			}
			payload := (*rd.bp)[rd.r : rd.r+int(size)]
			rd.r += int(size)
			unmask(key, payload)
			if err := rd.control(op, payload); err != nil {
				rd.release()
				return nil, err
			}
			continue
		case opContinuation:
			if !fragmented {
				return nil, rd.protocolError("continuation frame without a message")
			}
		case opText, opBinary:
			if fragmented {
				return nil, rd.protocolError("new message inside a fragmented one")
			}
		default:
			return nil, rd.protocolError("unknown opcode")
		}

		if int64(len(msg))+size > rd.maxPayload {
			_ = rd.ws.WriteControl(opClose, closePayload(CloseMessageTooBig, ""), time.Now().Add(time.Second))
			return nil, errReadLimit
		}
		start := len(msg)
		if msg == nil && fin {
			msg = make([]byte, size)
		} else {
			msg = append(msg, make([]byte, size)...)
		}
		if err := rd.fill(msg[start:]); err != nil {
			return nil, err
		}
		unmask(key, msg[start:])
		if fin {
			rd.release()
			return msg, nil
		}
		fragmented = true
	}
}

// control handles a ping, pong or close frame from the client.
func (rd *wsReader) control(op int, payload []byte) error {
	switch op {
	case opPing:
		if err := rd.ws.WriteControl(opPong, payload, time.Now().Add(time.Second)); err != nil {
			return err
		}
	case opClose:
		code, text := CloseNoStatus, ""
		if len(payload) == 1 {
			return rd.protocolError("close frame of one byte")
		}
		if len(payload) >= 2 {
			code, text = int(binary.BigEndian.Uint16(payload)), string(payload[2:])
			if !validReceivedCloseCode(code) {
				return rd.protocolError("invalid close code")
			}
			if !utf8.ValidString(text) {
				return rd.protocolError("invalid UTF-8 in close frame")
			}
		}
		_ = rd.ws.WriteControl(opClose, closePayload(code, ""), time.Now().Add(time.Second))
		return &closeError{code: code, text: text}
	}
	return nil // pongs need no answer
}

func (rd *wsReader) protocolError(what string) error {
	_ = rd.ws.WriteControl(opClose, closePayload(CloseProtocolError, what), time.Now().Add(time.Second))
	return errProtocol(what)
}

// validReceivedCloseCode is what a peer may send in a close frame
// (RFC 6455 section 7.4, the registered codes, and 3000-4999).
func validReceivedCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1013:
		return true
	default:
		return code >= 3000 && code <= 4999
	}
}

// unmask XORs p with the frame's masking key (as read little-endian),
// eight bytes at a time.
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
