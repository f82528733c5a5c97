//go:build linux

package gateway

// Tunnel sessions in the relay loop: each loop keeps one session
// (internal/tunnel) to each worker it carries clients to, and moves a
// client's bytes between the client's socket and its stream. A fan-out
// that reaches a thousand of a worker's clients arrives here in a few
// large reads, where a socket per client would have cost the worker a
// thousand writes and the gateway a thousand reads.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/scc-k8s/scc/internal/tunnel"
)

const (
	// sessionBuf is the most a session read takes at once.
	sessionBuf = 256 << 10
	// outHigh: clients of a session stop being read while this many
	// bytes wait to be written to its worker; they resume below outLow.
	outHigh = 1 << 20
	outLow  = 256 << 10
	// sessionIdle closes a session that carried no stream for this long.
	sessionIdle = time.Minute
)

var errSessionEnded = errors.New("gateway: tunnel session ended")

// session is one tunnel session to a worker, served by one loop. Its
// fields are guarded by the loop's mu.
type session struct {
	r       *relay
	fd      int
	addr    string
	side    *side
	in      []byte // read, not yet parsed (at most one partial frame)
	out     []byte // frames not yet written
	streams map[uint32]*stream
	nextID  uint32
	paused  []*stream // clients not read while out is over outHigh
	dirty   bool      // out has bytes and the session is on r.dirty
	dead    bool
	retired bool // out of ids: no new streams; closed when the last ends
	idleAt  time.Time
}

// stream is one client carried on a session.
type stream struct {
	id        uint32
	ss        *session
	client    *side      // nil until attached (or pumped)
	pc        *pumped    // a client Go must handle (TLS), instead of client
	hs        *handshake // the worker's answer, until attached
	done      func()
	sendWin   int       // bytes the client may still send to the worker
	recvAvail int       // bytes the worker may still send
	consumed  int       // written to the client, not yet granted back
	closed    bool      // the worker closed its end
	tail      frameTail // the worker's frames to the client
	winPaused bool      // the client is not read: no window
	outPaused bool      // the client is not read: the session's out is full
	halfAt    time.Time
}

// handshake holds what the worker sends before the stream is attached to
// its client: its answer to the upgrade.
type handshake struct {
	buf  []byte
	err  error
	wake chan struct{} // cap 1
}

// notify wakes the answer reader.
func (hs *handshake) notify() { notify(hs.wake) }

// openStream opens a stream to the worker at addr (dialling a session
// when this loop has none) and sends req on it; the worker's answer is
// read with answer.
func (rs *relays) openStream(ctx context.Context, addr, token string, timeout time.Duration, req []byte) (*stream, error) {
	r := rs.loops[int(rs.next.Add(1))%len(rs.loops)]
	for attempt := 0; ; attempt++ {
		ss, err := r.session(ctx, addr, token, timeout)
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		if ss.dead || ss.retired {
			r.mu.Unlock()
			if attempt < 2 {
				continue
			}
			return nil, errSessionEnded
		}
		if ss.nextID >= tunnel.MaxStreamID {
			r.retire(ss)
			r.mu.Unlock()
			continue
		}
		ss.nextID++
		st := &stream{id: ss.nextID, ss: ss, hs: &handshake{wake: make(chan struct{}, 1)},
			sendWin: tunnel.InitialWindow - len(req), recvAvail: tunnel.InitialWindow}
		ss.streams[st.id] = st
		ss.idleAt = time.Time{}
		ss.out = tunnel.AppendHeader(ss.out, tunnel.Open, st.id, 0)
		ss.out = tunnel.AppendData(ss.out, st.id, req)
		r.flushSession(ss)
		r.mu.Unlock()
		return st, nil
	}
}

// session returns the loop's session to addr, dialling one when there is
// none (one dial at a time per address).
func (r *relay) session(ctx context.Context, addr, token string, timeout time.Duration) (*session, error) {
	for {
		r.mu.Lock()
		if ss := r.sessions[addr]; ss != nil && !ss.dead && !ss.retired {
			r.mu.Unlock()
			return ss, nil
		}
		if wait, ok := r.dialing[addr]; ok {
			r.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		wait := make(chan struct{})
		r.dialing[addr] = wait
		r.mu.Unlock()
		ss, err := r.dial(ctx, addr, token, timeout)
		r.mu.Lock()
		delete(r.dialing, addr)
		close(wait)
		r.mu.Unlock()
		return ss, err
	}
}

func (r *relay) dial(ctx context.Context, addr, token string, timeout time.Duration) (*session, error) {
	nc, err := tunnel.Dial(ctx, addr, token, timeout)
	if err != nil {
		return nil, err
	}
	fd, err := takeFD(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	ss := &session{r: r, fd: fd, addr: addr, streams: make(map[uint32]*stream), in: make([]byte, 0, sessionBuf)}
	ss.side = &side{fd: fd, sess: ss, events: syscall.EPOLLIN | syscall.EPOLLRDHUP}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.grow(fd)
	r.sides[fd] = ss.side
	if err := syscall.EpollCtl(r.epfd, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: ss.side.events, Fd: int32(fd)}); err != nil {
		r.sides[fd] = nil
		syscall.Close(fd)
		return nil, err
	}
	if old := r.sessions[addr]; old != nil && !old.dead {
		r.retire(old)
	}
	r.sessions[addr] = ss
	return ss, nil
}

// retire stops new streams on ss; it closes once its last stream ends.
func (r *relay) retire(ss *session) {
	ss.retired = true
	if r.sessions[ss.addr] == ss {
		delete(r.sessions, ss.addr)
	}
	if len(ss.streams) == 0 {
		r.endSession(ss)
	}
}

// answer reads the worker's bytes on a stream not yet attached, until
// the deadline.
type answer struct {
	r        *relay
	st       *stream
	deadline time.Time
}

func (a *answer) Read(p []byte) (int, error) {
	for {
		a.r.mu.Lock()
		hs := a.st.hs
		if hs == nil {
			a.r.mu.Unlock()
			return 0, net.ErrClosed
		}
		if len(hs.buf) > 0 {
			n := copy(p, hs.buf)
			hs.buf = hs.buf[n:]
			a.st.consumed += n
			a.r.mu.Unlock()
			return n, nil
		}
		err := hs.err
		a.r.mu.Unlock()
		if err != nil {
			return 0, err
		}
		wait := time.Until(a.deadline)
		if wait <= 0 {
			return 0, os.ErrDeadlineExceeded
		}
		t := time.NewTimer(wait)
		select {
		case <-hs.wake:
			t.Stop()
		case <-t.C:
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// abort gives up a stream not attached to a client (the worker refused
// it, or its answer did not come).
func (st *stream) abort() {
	r := st.ss.r
	r.mu.Lock()
	defer r.mu.Unlock()
	st.hs = nil
	r.dropStream(st, true)
}

// attach hands the client's connection to the loop: from now on the
// stream's bytes go to it, starting with what the worker sent after its
// answer and the answer reader did not take. done runs once when the
// client's connection closes. On an error the connection is closed and
// done has not run.
func (st *stream) attach(c net.Conn, done func()) error {
	if _, ok := c.(*net.TCPConn); !ok {
		c.Close()
		st.abort()
		return errors.New("relay: plain TCP only")
	}
	fd, err := takeFD(c)
	if err != nil {
		c.Close()
		st.abort()
		return err
	}
	ss := st.ss
	r := ss.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if ss.dead || st.hs == nil {
		syscall.Close(fd)
		return errSessionEnded
	}
	rest := st.hs.buf
	st.hs = nil
	cs := &side{fd: fd, st: st, in: true, events: syscall.EPOLLIN | syscall.EPOLLRDHUP}
	st.client, st.done = cs, done
	r.grow(fd)
	r.sides[fd] = cs
	r.n++
	if err := syscall.EpollCtl(r.epfd, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: cs.events, Fd: int32(fd)}); err != nil {
		r.closeClient(st, true) // done runs
		return nil
	}
	if len(rest) > 0 {
		r.toClient(st, rest)
	}
	if st.closed && len(cs.pending) == 0 && st.client != nil {
		r.closeClient(st, false)
	}
	r.flushDirty()
	return nil
}

// sessionEvent serves a session's readiness. r.mu is held.
func (r *relay) sessionEvent(ss *session, ev uint32) {
	if ev&syscall.EPOLLERR != 0 {
		r.endSession(ss)
		return
	}
	if ev&syscall.EPOLLOUT != 0 {
		r.flushSession(ss)
		if ss.dead {
			return
		}
	}
	if ev&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP) != 0 {
		r.readSession(ss)
	}
}

// readSession reads the worker's frames and serves them.
func (r *relay) readSession(ss *session) {
	for !ss.dead {
		free := ss.in[len(ss.in):cap(ss.in)]
		n, err := rawRead(ss.fd, free)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return
		}
		if err != nil || n == 0 {
			r.endSession(ss)
			return
		}
		ss.in = ss.in[:len(ss.in)+n]
		if err := r.frames(ss); err != nil {
			r.endSession(ss)
			return
		}
		if n < len(free) {
			return // most likely drained; level-triggered epoll says if not
		}
	}
}

// frames serves the whole frames in ss.in and keeps the partial one.
func (r *relay) frames(ss *session) error {
	b := ss.in
	for len(b) >= tunnel.HeaderSize && !ss.dead {
		h, err := tunnel.ParseHeader(b)
		if err != nil {
			return err
		}
		size := tunnel.HeaderSize
		if h.Type == tunnel.Data {
			size += int(h.Length)
			if len(b) < size {
				break
			}
		}
		st := ss.streams[h.Stream]
		switch {
		case h.Stream > ss.nextID:
			return fmt.Errorf("%w: frame on stream %d, not opened", tunnel.ErrProtocol, h.Stream)
		case st == nil: // closed here; the worker has not seen it yet
		case h.Type == tunnel.Data:
			p := b[tunnel.HeaderSize:size]
			if len(p) > st.recvAvail {
				return fmt.Errorf("%w: stream %d sent past its window", tunnel.ErrProtocol, h.Stream)
			}
			st.recvAvail -= len(p)
			if st.hs != nil {
				st.hs.buf = append(st.hs.buf, p...)
				st.hs.notify()
			} else if st.client != nil {
				r.toClient(st, p)
			} else if st.pc != nil && !st.pc.gone {
				st.tail.feed(p)
				st.pc.out = append(st.pc.out, p...)
				notify(st.pc.wake)
			}
		case h.Type == tunnel.Window:
			st.sendWin += int(h.Length)
			if st.sendWin > tunnel.MaxWindow {
				return fmt.Errorf("%w: stream %d window past %d", tunnel.ErrProtocol, h.Stream, tunnel.MaxWindow)
			}
			if st.winPaused && st.client != nil {
				st.winPaused = false
				r.resumeClient(st)
			}
			if st.pc != nil {
				notify(st.pc.room)
			}
		case h.Type == tunnel.Close:
			st.closed = true
			switch {
			case st.hs != nil:
				st.hs.err = errSessionEnded
				st.hs.notify()
			case st.client != nil && len(st.client.pending) == 0:
				r.closeClient(st, false)
			case st.client != nil && st.halfAt.IsZero():
				st.halfAt = time.Now() // its last bytes get halfCloseGrace
			case st.pc != nil:
				if st.halfAt.IsZero() {
					st.halfAt = time.Now()
				}
				notify(st.pc.wake) // its writer closes it once its bytes are out
			}
		default:
			return fmt.Errorf("%w: frame type %d from a worker", tunnel.ErrProtocol, h.Type)
		}
		b = b[size:]
	}
	ss.in = append(ss.in[:0], b...)
	return nil
}

// toClient writes the worker's bytes to st's client, keeping what the
// client cannot take yet.
func (r *relay) toClient(st *stream, p []byte) {
	st.tail.feed(p)
	c := st.client
	if len(c.pending) > 0 {
		c.pending = append(c.pending, p...)
		return
	}
	w, err := writeAll(c.fd, p)
	if err != nil {
		r.closeClient(st, true)
		return
	}
	r.out.n.Add(int64(w))
	r.consumed(st, w)
	if w < len(p) {
		c.pending = append(c.pending[:0], p[w:]...)
		r.setEvents(c, c.events|syscall.EPOLLOUT)
	}
}

// consumed counts bytes written to st's client and grants them back to
// the worker a quarter window at a time.
func (r *relay) consumed(st *stream, n int) {
	st.consumed += n
	if st.consumed >= tunnel.GrantAt && !st.closed {
		ss := st.ss
		ss.out = tunnel.AppendHeader(ss.out, tunnel.Window, st.id, uint32(st.consumed))
		st.recvAvail += st.consumed
		st.consumed = 0
		r.markDirty(ss)
	}
}

// clientEvent serves the readiness of a client carried on a stream.
func (r *relay) clientEvent(c *side, ev uint32) {
	st := c.st
	if ev&syscall.EPOLLERR != 0 {
		r.closeClient(st, true)
		return
	}
	if ev&syscall.EPOLLOUT != 0 && len(c.pending) > 0 {
		w, err := writeAll(c.fd, c.pending)
		if err != nil {
			r.closeClient(st, true)
			return
		}
		r.out.n.Add(int64(w))
		c.pending = c.pending[w:]
		r.consumed(st, w)
		if len(c.pending) == 0 {
			c.pending = nil
			r.setEvents(c, c.events&^syscall.EPOLLOUT)
			if st.closed {
				r.closeClient(st, false)
				return
			}
		}
	}
	if st.ss.dead { // only its last bytes are written (endSession)
		if ev&syscall.EPOLLHUP != 0 {
			r.closeClient(st, false)
		}
		return
	}
	if ev&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP) != 0 && !c.eof {
		r.readClient(st)
	}
}

// readClient reads what the client sent into Data frames on its stream,
// as far as its window and the session's queue allow.
func (r *relay) readClient(st *stream) {
	c, ss := st.client, st.ss
	for !ss.dead && st.client != nil {
		if st.sendWin == 0 {
			st.winPaused = true
			r.setEvents(c, c.events&^syscall.EPOLLIN)
			return
		}
		if len(ss.out) >= outHigh {
			st.outPaused = true
			ss.paused = append(ss.paused, st)
			r.setEvents(c, c.events&^syscall.EPOLLIN)
			return
		}
		want := min(len(r.buf), st.sendWin, tunnel.MaxData)
		n, err := rawRead(c.fd, r.buf[:want])
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return
		}
		if err != nil {
			r.closeClient(st, true)
			return
		}
		if n == 0 { // the client finished sending; the worker reads EOF
			c.eof = true
			r.setEvents(c, c.events&^(syscall.EPOLLIN|syscall.EPOLLRDHUP))
			if !st.closed {
				ss.out = tunnel.AppendHeader(ss.out, tunnel.Fin, st.id, 0)
				r.markDirty(ss)
			}
			if st.halfAt.IsZero() {
				st.halfAt = time.Now()
			}
			return
		}
		r.in.n.Add(int64(n))
		st.sendWin -= n
		if !st.closed {
			ss.out = tunnel.AppendData(ss.out, st.id, r.buf[:n])
			r.markDirty(ss)
		}
		if n < want {
			return
		}
	}
}

// resumeClient reads a paused client again.
func (r *relay) resumeClient(st *stream) {
	if st.pc != nil {
		notify(st.pc.room)
		return
	}
	if c := st.client; c != nil && !c.eof && !st.winPaused && !st.outPaused {
		r.setEvents(c, c.events|syscall.EPOLLIN)
	}
}

func (r *relay) markDirty(ss *session) {
	if !ss.dirty {
		ss.dirty = true
		r.dirty = append(r.dirty, ss)
	}
}

// flushDirty writes every session's queued frames.
func (r *relay) flushDirty() {
	for _, ss := range r.dirty {
		ss.dirty = false
		if !ss.dead {
			r.flushSession(ss)
		}
	}
	r.dirty = r.dirty[:0]
}

// flushSession writes ss.out as far as the socket takes it; the rest
// waits for EPOLLOUT. Paused clients resume once the queue is short.
func (r *relay) flushSession(ss *session) {
	if ss.dead {
		return
	}
	if len(ss.out) > 0 {
		w, err := writeAll(ss.fd, ss.out)
		if err != nil {
			r.endSession(ss)
			return
		}
		rest := copy(ss.out, ss.out[w:])
		ss.out = ss.out[:rest]
		if cap(ss.out) > 4*outHigh && rest < outLow {
			ss.out = append([]byte(nil), ss.out...) // a burst's buffer goes
		}
	}
	want := ss.side.events &^ syscall.EPOLLOUT
	if len(ss.out) > 0 {
		want |= syscall.EPOLLOUT
	}
	r.setEvents(ss.side, want)
	if len(ss.out) < outLow && len(ss.paused) > 0 {
		paused := ss.paused
		ss.paused = nil
		for _, st := range paused {
			st.outPaused = false
			r.resumeClient(st)
		}
	}
}

// closeClient closes st's client connection and ends the stream; reset
// tells the worker (its client is gone) unless the worker closed first.
func (r *relay) closeClient(st *stream, reset bool) {
	c := st.client
	if c == nil || r.side(c.fd) != c {
		return
	}
	r.sides[c.fd] = nil
	r.n--
	syscall.Close(c.fd)
	st.client = nil
	r.dropStream(st, reset)
	if st.done != nil {
		go st.done() // outside the loop's lock
	}
}

// dropStream forgets a stream, telling the worker when it has not closed
// its end. r.mu is held.
func (r *relay) dropStream(st *stream, reset bool) {
	ss := st.ss
	if ss.streams[st.id] != st {
		return
	}
	delete(ss.streams, st.id)
	if !st.closed && !ss.dead && reset {
		ss.out = tunnel.AppendHeader(ss.out, tunnel.Reset, st.id, 0)
		r.markDirty(ss)
	}
	if len(ss.streams) == 0 {
		ss.idleAt = time.Now()
		if ss.retired {
			r.endSession(ss)
		}
	}
}

// endSession closes a session and every client it carried; answers not
// yet read fail. A client between two frames of its worker's is told to
// come back at once (byeFrame), after what it still had to get (within
// halfCloseGrace).
func (r *relay) endSession(ss *session) {
	if ss.dead {
		return
	}
	ss.dead = true
	r.sides[ss.fd] = nil
	syscall.Close(ss.fd)
	if r.sessions[ss.addr] == ss {
		delete(r.sessions, ss.addr)
	}
	for _, st := range ss.streams {
		st.closed = true
		if st.hs != nil {
			st.hs.err = errSessionEnded
			st.hs.notify()
			continue
		}
		if st.pc != nil {
			if !st.pc.gone && st.tail.sayGone() {
				st.pc.out = append(st.pc.out, r.bye()...)
				r.told()
			}
			if len(st.pc.out) == 0 || st.pc.gone {
				r.closePumped(st, false)
				continue
			}
			if st.halfAt.IsZero() {
				st.halfAt = time.Now()
			}
			notify(st.pc.wake) // its writer closes it once its bytes are out
			continue
		}
		if c := st.client; c != nil && r.side(c.fd) == c && st.tail.sayGone() {
			r.toClient(st, r.bye()) // closes the client if it cannot be written
			if st.client != nil {
				r.told()
			}
			if c := st.client; c != nil && len(c.pending) > 0 {
				if st.halfAt.IsZero() {
					st.halfAt = time.Now()
				}
				r.setEvents(c, syscall.EPOLLOUT) // written, then closed (clientEvent)
				continue
			}
		}
		if c := st.client; c != nil && r.side(c.fd) == c {
			r.sides[c.fd] = nil
			r.n--
			syscall.Close(c.fd)
			st.client = nil
			if st.done != nil {
				go st.done()
			}
		}
	}
	ss.streams = nil
	ss.out, ss.in, ss.paused = nil, nil, nil
}

// sweepSessions closes streams half-closed past halfCloseGrace and
// sessions idle past sessionIdle. r.mu is held.
func (r *relay) sweepSessions(now time.Time) {
	for _, ss := range r.sessions {
		if len(ss.streams) == 0 && !ss.idleAt.IsZero() && now.Sub(ss.idleAt) > sessionIdle {
			r.endSession(ss)
		}
	}
	for _, s := range r.sides {
		if s != nil && s.st != nil && !s.st.halfAt.IsZero() && now.Sub(s.st.halfAt) > halfCloseGrace {
			r.closeClient(s.st, true)
		}
	}
	for st := range r.pumped {
		if !st.halfAt.IsZero() && now.Sub(st.halfAt) > halfCloseGrace {
			r.closePumped(st, true)
		}
	}
}

// grow makes r.sides hold fd. r.mu is held.
func (r *relay) grow(fd int) {
	if need := fd + 1; need > len(r.sides) {
		r.sides = append(r.sides, make([]*side, need-len(r.sides)+need/2)...)
	}
}

// sessionsCount is the open sessions of every loop.
func (rs *relays) sessionsCount() int {
	n := 0
	for _, r := range rs.loops {
		r.mu.Lock()
		n += len(r.sessions)
		r.mu.Unlock()
	}
	return n
}

// errDraining is a worker that answered an upgrade with 503.
var errDraining = errors.New("gateway: worker draining")

// serveTunneled sends the upgrade to b on a stream of this gateway's
// session to it. A nil error means the request was answered: served
// reports whether a client was attached (its ip slot then goes with the
// connection); false is a worker's refusal, relayed. Any error means
// nothing reached the client: another worker is tried, or, for
// tunnel.ErrUnsupported, the same one over a socket of its own.
func (g *Gateway) serveTunneled(w http.ResponseWriter, r *http.Request, b *backend, ip string) (bool, error) {
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.DialTimeout)
	defer cancel()
	st, err := g.relays.openStream(ctx, b.addr, g.cfg.GRPC.Token, g.cfg.DialTimeout, g.upgradeRequest(r, ip))
	if err != nil {
		return false, err
	}
	br := bufio.NewReaderSize(&answer{r: st.ss.r, st: st, deadline: time.Now().Add(g.cfg.DialTimeout)}, 2048)
	resp, err := http.ReadResponse(br, r)
	switch {
	case err != nil:
		st.abort()
		return false, err
	case resp.StatusCode == http.StatusServiceUnavailable:
		st.abort()
		return false, errDraining
	case resp.StatusCode != http.StatusSwitchingProtocols:
		g.m.upgrades.WithLabelValues("worker_refused").Inc()
		relayRefusal(w, resp)
		st.abort()
		g.bal.done(b)
		return false, nil
	}
	cc, early, err := g.answerClient(w, br, resp, &st.tail) // the loop reads tail only once attached
	if err == nil && len(early) > 0 {
		err = st.send(early)
	}
	if err != nil {
		st.abort()
		g.upgradeFailed(cc, b)
		return false, nil
	}
	done := g.opened(b, ip)
	attach := st.attach
	if _, plain := cc.(*net.TCPConn); !plain {
		attach = st.attachPumped // TLS
	}
	if err := attach(cc, done); err != nil {
		done() // releases ip's slot too
		return true, nil
	}
	return true, nil
}

// send queues bytes for the worker on a stream not yet attached.
func (st *stream) send(p []byte) error {
	ss := st.ss
	r := ss.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if ss.dead || st.closed || len(p) > st.sendWin {
		return errSessionEnded
	}
	st.sendWin -= len(p)
	ss.out = tunnel.AppendData(ss.out, st.id, p)
	r.flushSession(ss)
	return nil
}
