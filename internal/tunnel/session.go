package tunnel

// The worker's side of sessions: a Listener whose connections are the
// streams of every session the gateways opened.

import (
	"bufio"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

const (
	// maxPending is how many bytes of frames a session holds for the
	// gateway while a write to it is under way; writers wait beyond it.
	maxPending = 1 << 20
	// maxStreams bounds the open streams of one session.
	maxStreams = 1 << 20
	// writeTimeout ends a session whose gateway has taken nothing for
	// this long.
	writeTimeout = 30 * time.Second
)

// Listener hands out the streams of the sessions it serves as
// connections. Closing it stops new streams (each is answered with Close
// at once); the sessions and their open streams go on until
// CloseSessions.
type Listener struct {
	log *slog.Logger

	mu       sync.Mutex
	queue    []*Conn
	closed   bool
	sessions map[*session]struct{}
	wake     chan struct{} // cap 1: queue grew
	done     chan struct{} // closed by Close
}

// NewListener makes a listener; its sessions come through Handler.
func NewListener(log *slog.Logger) *Listener {
	if log == nil {
		log = slog.Default()
	}
	return &Listener{log: log, sessions: make(map[*session]struct{}),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// Accept returns the next stream a gateway opened.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, net.ErrClosed
		}
		if len(l.queue) > 0 {
			c := l.queue[0]
			l.queue[0] = nil
			l.queue = l.queue[1:]
			if len(l.queue) > 0 {
				notify(l.wake) // for another Accept
			}
			l.mu.Unlock()
			return c, nil
		}
		l.mu.Unlock()
		select {
		case <-l.wake:
		case <-l.done:
		}
	}
}

// Addr names the listener: its streams come from many gateways.
func (l *Listener) Addr() net.Addr { return listenerAddr{} }

type listenerAddr struct{}

func (listenerAddr) Network() string { return "tunnel" }
func (listenerAddr) String() string  { return "tunnel" }

// Close stops accepting streams.
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	close(l.done)
	for _, c := range l.queue {
		go c.Close()
	}
	l.queue = nil
	return nil
}

// CloseSessions ends every session (their streams fail).
func (l *Listener) CloseSessions() {
	l.mu.Lock()
	ss := make([]*session, 0, len(l.sessions))
	for s := range l.sessions {
		ss = append(ss, s)
	}
	l.mu.Unlock()
	for _, s := range ss {
		s.nc.Close()
	}
}

// Sessions is the number of sessions being served.
func (l *Listener) Sessions() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sessions)
}

func (l *Listener) push(c *Conn) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.queue = append(l.queue, c)
	l.mu.Unlock()
	notify(l.wake)
	return true
}

// Handler accepts sessions: an HTTP upgrade to UpgradeToken carrying
// "Authorization: Bearer <token>" (any, when token is empty) is answered
// with 101 and served until it ends.
func (l *Listener) Handler(token string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method != http.MethodGet || !strings.EqualFold(r.Header.Get("Upgrade"), UpgradeToken):
			http.Error(w, "tunnel: not a tunnel upgrade", http.StatusBadRequest)
			return
		case r.Header.Get(VersionHeader) != Version:
			w.Header().Set(VersionHeader, Version)
			http.Error(w, "tunnel: unsupported version", http.StatusBadRequest)
			return
		case token != "" && !bearer(r, token):
			http.Error(w, "tunnel: missing or wrong cluster token", http.StatusUnauthorized)
			return
		}
		l.mu.Lock()
		closed := l.closed
		l.mu.Unlock()
		if closed {
			http.Error(w, "tunnel: draining", http.StatusServiceUnavailable)
			return
		}
		nc, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		if brw.Reader.Buffered() > 0 {
			nc.Close() // frames before the 101: not a gateway of ours
			return
		}
		_ = nc.SetDeadline(time.Time{})
		if _, err := io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "+UpgradeToken+"\r\nConnection: Upgrade\r\n\r\n"); err != nil {
			nc.Close()
			return
		}
		err = l.Serve(nc)
		l.log.Debug("tunnel session ended", "gateway", nc.RemoteAddr().String(), "err", err)
	})
}

func bearer(r *http.Request, token string) bool {
	v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(v), []byte(token)) == 1
}

// Serve runs a session on nc (past its upgrade) until it ends, and
// closes nc.
func (l *Listener) Serve(nc net.Conn) error {
	s := &session{l: l, nc: nc, streams: make(map[uint32]*Conn), room: make(chan struct{})}
	l.mu.Lock()
	l.sessions[s] = struct{}{}
	l.mu.Unlock()
	err := s.readLoop()
	s.end()
	l.mu.Lock()
	delete(l.sessions, s)
	l.mu.Unlock()
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// session is one gateway connection.
type session struct {
	l  *Listener
	nc net.Conn

	mu      sync.Mutex // guards streams
	streams map[uint32]*Conn
	lastID  uint32 // read loop only

	wmu        sync.Mutex // guards the write side below
	out, spare []byte
	flushing   bool          // a writer is writing out's bytes
	werr       error         // the session's write failed
	room       chan struct{} // closed after a write when roomWaited
	roomWaited bool
}

// readLoop reads the gateway's frames until the session fails.
func (s *session) readLoop() error {
	br := bufio.NewReaderSize(s.nc, 64<<10)
	var hdr [HeaderSize]byte
	scratch := make([]byte, MaxData)
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return err
		}
		h, err := ParseHeader(hdr[:])
		if err != nil {
			return err
		}
		if h.Type == Open {
			if h.Stream <= s.lastID {
				return fmt.Errorf("%w: stream %d opened after %d", ErrProtocol, h.Stream, s.lastID)
			}
			s.lastID = h.Stream
			c := newConn(s, h.Stream)
			s.mu.Lock()
			n := len(s.streams)
			if n < maxStreams {
				s.streams[h.Stream] = c
			}
			s.mu.Unlock()
			if n >= maxStreams || !s.l.push(c) {
				c.Close() // the gateway tries another worker
			}
			continue
		}
		if h.Stream > s.lastID {
			return fmt.Errorf("%w: frame type %d on stream %d before it opened", ErrProtocol, h.Type, h.Stream)
		}
		var p []byte
		if h.Type == Data {
			p = scratch[:h.Length]
			if _, err := io.ReadFull(br, p); err != nil {
				return err
			}
		}
		s.mu.Lock()
		c := s.streams[h.Stream]
		s.mu.Unlock()
		if c == nil {
			continue // closed on this side; the gateway has not seen it yet
		}
		switch h.Type {
		case Data:
			if !c.push(p) {
				return fmt.Errorf("%w: stream %d sent past its window", ErrProtocol, h.Stream)
			}
		case Fin:
			c.finish()
		case Reset:
			s.forget(h.Stream)
			c.fail(ErrReset)
		case Window:
			if !c.grant(h.Length) {
				return fmt.Errorf("%w: stream %d window past %d", ErrProtocol, h.Stream, MaxWindow)
			}
		default: // Close goes the other way
			return fmt.Errorf("%w: frame type %d from the gateway", ErrProtocol, h.Type)
		}
	}
}

// end closes the connection and fails every stream.
func (s *session) end() {
	s.nc.Close()
	s.mu.Lock()
	streams := s.streams
	s.streams = make(map[uint32]*Conn)
	s.mu.Unlock()
	for _, c := range streams {
		c.fail(errSessionEnded)
	}
	s.wmu.Lock()
	if s.werr == nil {
		s.werr = errSessionEnded
	}
	if s.roomWaited {
		close(s.room)
		s.room, s.roomWaited = make(chan struct{}), false
	}
	s.wmu.Unlock()
}

func (s *session) forget(id uint32) {
	s.mu.Lock()
	delete(s.streams, id)
	s.mu.Unlock()
}

// data sends p on stream id; it waits while maxPending bytes are ahead
// of it, until wdl.
func (s *session) data(id uint32, p []byte, wdl *deadline) error {
	s.wmu.Lock()
	for s.flushing && len(s.out) >= maxPending && s.werr == nil {
		ch := s.room
		s.roomWaited = true
		s.wmu.Unlock()
		select {
		case <-ch:
		case <-wdl.expired():
			return os.ErrDeadlineExceeded
		}
		s.wmu.Lock()
	}
	if s.werr != nil {
		err := s.werr
		s.wmu.Unlock()
		return err
	}
	s.out = AppendData(s.out, id, p)
	return s.flushLocked()
}

// control sends a frame without payload.
func (s *session) control(typ byte, id uint32, n uint32) {
	s.wmu.Lock()
	if s.werr != nil {
		s.wmu.Unlock()
		return
	}
	s.out = AppendHeader(s.out, typ, id, n)
	_ = s.flushLocked()
}

// flushLocked writes what is pending unless another writer is already
// doing so (it then writes these bytes too, after its own: the frames of
// many streams leave in one write). s.wmu is held and released.
func (s *session) flushLocked() error {
	if s.flushing {
		s.wmu.Unlock()
		return nil
	}
	s.flushing = true
	for len(s.out) > 0 && s.werr == nil {
		buf := s.out
		s.out = s.spare[:0]
		s.wmu.Unlock()
		_ = s.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := s.nc.Write(buf)
		s.wmu.Lock()
		s.spare = buf[:0]
		if err != nil && s.werr == nil {
			s.werr = err
		}
		if s.roomWaited {
			close(s.room)
			s.room, s.roomWaited = make(chan struct{}), false
		}
	}
	s.flushing = false
	err := s.werr
	s.wmu.Unlock()
	if err != nil {
		s.nc.Close() // the read loop ends and fails the streams
	}
	return err
}

// ErrUnsupported is a worker that does not serve tunnels (older than
// this protocol): the gateway connects to it a socket per client.
var ErrUnsupported = errors.New("tunnel: the worker does not serve tunnels")

// Dial opens a session to the worker at addr: a TCP connection upgraded
// with token. What it returns carries frames.
func Dial(ctx context.Context, addr, token string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(timeout))
	req := "GET " + Path + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: " + UpgradeToken +
		"\r\nConnection: Upgrade\r\n" + VersionHeader + ": " + Version + "\r\n"
	if token != "" {
		req += "Authorization: Bearer " + token + "\r\n"
	}
	if _, err := io.WriteString(nc, req+"\r\n"); err != nil {
		nc.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 1024)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, err
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusBadRequest:
		// A worker from before tunnels answers the path as any other.
		nc.Close()
		return nil, ErrUnsupported
	case resp.StatusCode != http.StatusSwitchingProtocols:
		nc.Close()
		return nil, fmt.Errorf("tunnel: worker answered %s", resp.Status)
	case br.Buffered() > 0:
		nc.Close()
		return nil, fmt.Errorf("%w: bytes before the first stream", ErrProtocol)
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, nil
}
