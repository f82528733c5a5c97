// Package tunnel carries many client connections between the gateway and
// a worker over one TCP connection (a session), so that a fan-out the
// worker sends to a thousand sockets leaves it in a few large writes and
// reaches the gateway in a few large reads, instead of a write and a read
// per socket. The gateway still does not parse WebSocket frames: a stream
// carries a client's bytes as they are, both ways.
//
// The gateway opens a session with an HTTP upgrade (Upgrade: scc-tunnel)
// to the worker's port, carrying the cluster token, and then opens one
// stream per client connection: the client's request bytes, then its
// WebSocket frames, go to the worker as DATA on the stream; the worker's
// answer and frames come back the same way. Each direction of each stream
// has a window of Window bytes the sender may have in flight; the
// receiver grants more as it consumes them, so one slow client holds back
// its own stream only, never the session.
//
// The worker's side is a net.Listener of streams (Listener); each stream
// is a net.Conn (Conn) that net/http and the WebSocket layer use as they
// would a socket. The gateway's side lives in its relay loop
// (services/ingress-gw), which reads and writes the session's frames
// itself.
//
// A frame is a 9-byte header, then its payload:
//
//	type   1 byte  (Open, Data, Fin, Reset, Window, Close)
//	stream 4 bytes big-endian, > 0
//	length 4 bytes big-endian: the payload's length (Data), the window
//	       increment (Window), 0 for the others
//
// Open (gateway to worker) starts a stream; its ids only increase within
// a session. Data carries bytes. Fin says the gateway's client has
// finished sending (the worker reads EOF). Reset says the client is gone.
// Close (worker to gateway) says the worker has closed its connection:
// the gateway writes what it holds for the client and closes it. Window
// grants the sender that many more bytes.
package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Frame types.
const (
	Open   byte = 1
	Data   byte = 2
	Fin    byte = 3
	Reset  byte = 4
	Window byte = 5
	Close  byte = 6
)

const (
	// HeaderSize is a frame header's size.
	HeaderSize = 9
	// MaxData is the most payload one Data frame carries.
	MaxData = 64 << 10
	// InitialWindow is what each direction of a new stream may send
	// before the receiver grants more.
	InitialWindow = 256 << 10
	// GrantAt is how much a receiver consumes before it grants it back
	// (a quarter of the window: a sender never waits while the receiver
	// keeps up).
	GrantAt = InitialWindow / 4
	// MaxWindow bounds a stream's window: a grant past it is a protocol
	// error (a peer cannot make the other side buffer without limit).
	MaxWindow = 16 << 20
	// MaxStreamID is the last stream id a session uses; a gateway then
	// opens a new session.
	MaxStreamID = 1<<31 - 1
)

// Upgrade is the HTTP Upgrade token of a session; Path is where workers
// accept it; VersionHeader carries Version.
const (
	UpgradeToken  = "scc-tunnel"
	Path          = "/_scc/tunnel"
	VersionHeader = "Scc-Tunnel-Version"
	Version       = "1"
)

// ErrProtocol is a peer that broke the framing rules; the session ends.
var ErrProtocol = errors.New("tunnel: protocol error")

// Header is one frame's header.
type Header struct {
	Type   byte
	Stream uint32
	Length uint32
}

// AppendHeader appends a frame header to b.
func AppendHeader(b []byte, typ byte, stream uint32, n uint32) []byte {
	b = append(b, typ, 0, 0, 0, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(b[len(b)-8:], stream)
	binary.BigEndian.PutUint32(b[len(b)-4:], n)
	return b
}

// AppendData appends Data frames carrying p (several when p is longer
// than MaxData).
func AppendData(b []byte, stream uint32, p []byte) []byte {
	for len(p) > 0 {
		n := min(len(p), MaxData)
		b = append(AppendHeader(b, Data, stream, uint32(n)), p[:n]...)
		p = p[n:]
	}
	return b
}

// ParseHeader reads the header at the start of b (len(b) >= HeaderSize)
// and checks what the header alone can tell: a known type, a stream id
// above 0, a Data payload within MaxData, a window increment within
// MaxWindow, no length on the others.
func ParseHeader(b []byte) (Header, error) {
	h := Header{Type: b[0], Stream: binary.BigEndian.Uint32(b[1:5]), Length: binary.BigEndian.Uint32(b[5:9])}
	if h.Stream == 0 || h.Stream > MaxStreamID {
		return h, fmt.Errorf("%w: stream id %d", ErrProtocol, h.Stream)
	}
	switch h.Type {
	case Data:
		if h.Length == 0 || h.Length > MaxData {
			return h, fmt.Errorf("%w: data frame of %d bytes", ErrProtocol, h.Length)
		}
	case Window:
		if h.Length == 0 || h.Length > MaxWindow {
			return h, fmt.Errorf("%w: window increment %d", ErrProtocol, h.Length)
		}
	case Open, Fin, Reset, Close:
		if h.Length != 0 {
			return h, fmt.Errorf("%w: length %d on frame type %d", ErrProtocol, h.Length, h.Type)
		}
	default:
		return h, fmt.Errorf("%w: frame type %d", ErrProtocol, h.Type)
	}
	return h, nil
}
