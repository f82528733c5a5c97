//go:build linux

package gateway

// The relay: after the upgrade, a plain TCP connection pair leaves Go's
// network poller for a loop of our own, one per core, that does what
// nginx does: epoll, a read into the loop's one buffer, a write to the
// other side. No goroutine, stack or buffer is held per connection; bytes
// that the other side cannot take yet wait in a per-side slice while that
// direction stops reading (the kernel's buffers then push back on the
// sender). Measured against one goroutine per direction (pump.go, kept
// for TLS clients, whose bytes Go decrypts), the loop takes about a third
// fewer syscalls and less CPU per delivered message (docs/benchmarks.md).

import (
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// relayBuf is the size of one read.
const relayBuf = 64 << 10

// side is one end of a tunnel: its socket, and the bytes read from the
// other end that this socket could not take yet.
type side struct {
	fd      int
	peer    *side    // the other socket of a tunnel (t)
	t       *pair    // nil for the two kinds below
	st      *stream  // a client carried on a session's stream
	sess    *session // a tunnel session to a worker
	in      bool     // reading this side counts as client-to-worker bytes
	pending []byte   // waiting to be written to fd
	eof     bool     // fd's read side has ended
	events  uint32   // registered with epoll
}

type pair struct {
	client, worker side
	halfAt         time.Time // when one side first ended
	tail           frameTail // the worker's frames to the client
	done           func()
}

type relay struct {
	epfd  int
	file  *os.File // epfd, waited on through Go's own poller
	buf   []byte
	in    *counter
	out   *counter
	gone  func(cut bool) // counts a close frame sent (cut: cutFrame)
	mu    sync.Mutex
	sides []*side // by fd (descriptors are small numbers: a slice beats a map)
	n     int     // clients (tunnels and streams)

	sessions map[string]*session      // by worker address
	dialing  map[string]chan struct{} // sessions being dialled
	dirty    []*session               // sessions with frames to write
	pumped   map[*stream]struct{}     // clients on streams moved by goroutines (TLS)

	// cutting is the gateway's: its drain deadline has passed, and the
	// clients whose workers' sides endWorkers ended are told cutFrame.
	cutting *atomic.Bool
}

type counter struct{ n atomic.Int64 }

// relays are the gateway's loops; a tunnel goes to one of them in turn.
type relays struct {
	loops []*relay
	next  atomic.Uint32
}

func newRelays(in, out func(int64), gone func(cut bool), cutting *atomic.Bool) (*relays, error) {
	n := runtime.GOMAXPROCS(0)
	rs := &relays{}
	for i := 0; i < n; i++ {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			rs.close()
			return nil, err
		}
		// Non-blocking, the epoll fd joins Go's poller like a socket: the
		// loop parks as a goroutine until events are ready, rather than
		// holding a thread in epoll_wait (whose every return costs the
		// scheduler a thread hand-off).
		if err := syscall.SetNonblock(epfd, true); err != nil {
			syscall.Close(epfd)
			rs.close()
			return nil, err
		}
		r := &relay{epfd: epfd, file: os.NewFile(uintptr(epfd), "relay-epoll"), buf: make([]byte, relayBuf),
			in: &counter{}, out: &counter{}, gone: gone, cutting: cutting, sessions: make(map[string]*session), dialing: make(map[string]chan struct{}),
			pumped: make(map[*stream]struct{})}
		rs.loops = append(rs.loops, r)
		go r.run(in, out)
	}
	return rs, nil
}

func (rs *relays) close() {
	for _, r := range rs.loops {
		r.shutdownAll()
		r.file.Close() // the loop's wait fails and it returns
	}
}

// shutdownAll ends every tunnel: the loops see both sides end and close
// them.
func (rs *relays) shutdownAll() int {
	n := 0
	for _, r := range rs.loops {
		n += r.shutdownAll()
	}
	return n
}

// endWorkers ends the workers' side of every client, leaving the
// clients' own: each one between two frames of its worker's is told to
// come back at once (cutFrame) once what it still had to get is out, then
// closed, as when its worker dies. The gateway's drain does this at its
// deadline, before it cuts what is left.
func (rs *relays) endWorkers() {
	for _, r := range rs.loops {
		r.endWorkers()
	}
}

func (r *relay) endWorkers() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for fd, s := range r.sides { // sessions carry the pumped (TLS) clients too
		if s != nil && (s.sess != nil || (s.t != nil && !s.in)) {
			_ = syscall.Shutdown(fd, syscall.SHUT_RDWR)
		}
	}
}

// bye is the close frame for a client whose worker's side ended first,
// and told counts one written.
func (r *relay) bye() []byte { return byeFrame(r.cutting.Load()) }

func (r *relay) told() { r.gone(r.cutting.Load()) }

func (r *relay) shutdownAll() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for fd, s := range r.sides {
		if s != nil {
			_ = syscall.Shutdown(fd, syscall.SHUT_RDWR)
		}
	}
	for st := range r.pumped {
		go st.pc.c.Close() // its goroutines see it and end the stream
	}
	return r.n
}

// takeFD duplicates c's socket and closes c: the duplicate leaves Go's
// poller (which forgets its own registration on Close) and stays
// non-blocking.
func takeFD(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		syscall.ForkLock.RLock()
		nfd, derr = syscall.Dup(int(fd))
		if derr == nil {
			syscall.CloseOnExec(nfd)
		}
		syscall.ForkLock.RUnlock()
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	_ = c.Close()
	return nfd, nil
}

// add hands a client and worker connection to a loop (tail: the worker's
// frames so far); done runs once when both are closed. On an error the
// connections are untouched (closed only if they were taken).
func (rs *relays) add(client, worker net.Conn, tail frameTail, done func()) error {
	_, ok1 := client.(*net.TCPConn)
	_, ok2 := worker.(*net.TCPConn)
	if !ok1 || !ok2 {
		return errors.New("relay: plain TCP only")
	}
	cfd, err := takeFD(client)
	if err != nil {
		return err
	}
	wfd, err := takeFD(worker)
	if err != nil {
		syscall.Close(cfd)
		return err
	}
	t := &pair{done: done, tail: tail}
	t.client = side{fd: cfd, t: t, in: true}
	t.worker = side{fd: wfd, t: t}
	t.client.peer, t.worker.peer = &t.worker, &t.client
	r := rs.loops[int(rs.next.Add(1))%len(rs.loops)]
	t.client.events = syscall.EPOLLIN | syscall.EPOLLRDHUP
	t.worker.events = t.client.events
	r.mu.Lock()
	defer r.mu.Unlock()
	r.grow(max(cfd, wfd))
	r.sides[cfd], r.sides[wfd] = &t.client, &t.worker
	r.n++
	for _, s := range []*side{&t.client, &t.worker} {
		if err := syscall.EpollCtl(r.epfd, syscall.EPOLL_CTL_ADD, s.fd, &syscall.EpollEvent{Events: s.events, Fd: int32(s.fd)}); err != nil {
			r.teardown(t) // done runs
			return nil
		}
	}
	return nil
}

func (r *relay) run(in, out func(int64)) {
	rc, err := r.file.SyscallConn()
	if err != nil {
		return
	}
	events := make([]syscall.EpollEvent, 64)
	lastSweep := time.Now()
	_ = r.file.SetReadDeadline(lastSweep.Add(time.Second))
	for {
		n := 0
		err := rc.Read(func(fd uintptr) bool {
			var werr error
			n, werr = epollPoll(int(fd), events)
			return n > 0 || (werr != nil && werr != syscall.EINTR) // nothing yet: park
		})
		now := time.Now()
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return // closed
		}
		r.mu.Lock()
		for _, ev := range events[:n] {
			if s := r.side(int(ev.Fd)); s != nil {
				r.handle(s, ev.Events)
			}
		}
		r.flushDirty() // the frames the events queued leave in one write per session
		if now.Sub(lastSweep) >= time.Second {
			lastSweep = now
			r.sweep(now)
			r.sweepSessions(now)
			_ = r.file.SetReadDeadline(now.Add(time.Second))
		}
		r.mu.Unlock()
		if v := r.in.n.Swap(0); v > 0 {
			in(v)
		}
		if v := r.out.n.Swap(0); v > 0 {
			out(v)
		}
		// Its syscalls never block, so under load the loop would keep its
		// thread for a whole time slice at a time; the upgrades waiting to
		// be served (and the other loops) get their turn between batches.
		runtime.Gosched()
	}
}

// handle serves one side's readiness. r.mu is held.
func (r *relay) handle(s *side, ev uint32) {
	if s.sess != nil {
		r.sessionEvent(s.sess, ev)
		return
	}
	if s.st != nil {
		r.clientEvent(s, ev)
		return
	}
	t := s.t
	if ev&syscall.EPOLLERR != 0 {
		r.teardown(t)
		return
	}
	if ev&syscall.EPOLLOUT != 0 && len(s.pending) > 0 {
		if !r.flush(s) {
			return
		}
	}
	if ev&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP) != 0 && !s.eof && len(s.peer.pending) == 0 {
		r.pull(s)
	}
}

// pull reads what s has and writes it to its peer, until s has nothing
// more, the peer cannot take more, or s has ended.
func (r *relay) pull(s *side) {
	for {
		n, err := rawRead(s.fd, r.buf)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return
		}
		if err != nil {
			r.workerGone(s)
			r.teardown(s.t)
			return
		}
		if n == 0 { // s ended: so does the peer's writing, once flushed
			r.workerGone(s)
			s.eof = true
			r.setEvents(s, s.events&^(syscall.EPOLLIN|syscall.EPOLLRDHUP))
			_ = syscall.Shutdown(s.peer.fd, syscall.SHUT_WR)
			r.ended(s.t)
			return
		}
		if s.in {
			r.in.n.Add(int64(n))
		} else {
			r.out.n.Add(int64(n))
			s.t.tail.feed(r.buf[:n])
		}
		w, err := writeAll(s.peer.fd, r.buf[:n])
		if err != nil {
			r.teardown(s.t)
			return
		}
		if w < n { // the peer is full: hold the rest, stop reading s
			s.peer.pending = append(s.peer.pending[:0], r.buf[w:n]...)
			r.setEvents(s, s.events&^syscall.EPOLLIN)
			r.setEvents(s.peer, s.peer.events|syscall.EPOLLOUT)
			return
		}
		if n < len(r.buf) {
			return // most likely drained; level-triggered epoll says if not
		}
	}
}

// workerGone tells the client, when s is the worker's side and it ended
// first and unannounced between two frames, to come back at once. Its
// pending bytes are out (s is read only then); should the close frame not
// fit, the client sees the end it would have seen without it.
func (r *relay) workerGone(s *side) {
	t := s.t
	if s.in || t.client.eof || !t.tail.sayGone() {
		return
	}
	bye := r.bye()
	if w, _ := writeAll(t.client.fd, bye); w == len(bye) {
		r.told()
	}
}

// flush writes s's pending bytes; when they are out, reading its peer
// resumes. It reports false if the tunnel was torn down.
func (r *relay) flush(s *side) bool {
	w, err := writeAll(s.fd, s.pending)
	if err != nil {
		r.teardown(s.t)
		return false
	}
	s.pending = s.pending[w:]
	if len(s.pending) > 0 {
		return true
	}
	s.pending = nil
	r.setEvents(s, s.events&^syscall.EPOLLOUT)
	if !s.peer.eof {
		r.setEvents(s.peer, s.peer.events|syscall.EPOLLIN)
	}
	return true
}

// writeAll writes until done or the socket is full (EAGAIN: fewer bytes
// written, no error).
func writeAll(fd int, b []byte) (int, error) {
	w := 0
	for w < len(b) {
		n, err := rawWrite(fd, b[w:])
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return w, nil
		}
		if err != nil {
			return w, err
		}
		w += n
	}
	return w, nil
}

func (r *relay) setEvents(s *side, ev uint32) {
	if ev == s.events {
		return
	}
	s.events = ev
	_ = syscall.EpollCtl(r.epfd, syscall.EPOLL_CTL_MOD, s.fd, &syscall.EpollEvent{Events: ev, Fd: int32(s.fd)})
}

// ended notes a side's end: both ended (and flushed) closes the tunnel;
// one ended starts the half-close grace.
func (r *relay) ended(t *pair) {
	if t.client.eof && t.worker.eof {
		r.teardown(t)
		return
	}
	if t.halfAt.IsZero() {
		t.halfAt = time.Now()
	}
}

// sweep closes tunnels half-closed for longer than halfCloseGrace.
func (r *relay) sweep(now time.Time) {
	for _, s := range r.sides {
		if s != nil && s.t != nil && s.in && !s.t.halfAt.IsZero() && now.Sub(s.t.halfAt) > halfCloseGrace {
			r.teardown(s.t)
		}
	}
}

func (r *relay) side(fd int) *side {
	if fd < 0 || fd >= len(r.sides) {
		return nil
	}
	return r.sides[fd]
}

// teardown closes both sides (closing removes them from epoll) once.
func (r *relay) teardown(t *pair) {
	if r.side(t.client.fd) != &t.client {
		return // already
	}
	r.sides[t.client.fd], r.sides[t.worker.fd] = nil, nil
	r.n--
	syscall.Close(t.client.fd)
	syscall.Close(t.worker.fd)
	if t.done != nil {
		go t.done() // outside the loop's lock
	}
}

// The loop's syscalls on its non-blocking descriptors never block, so
// they go without the runtime's syscall bookkeeping (entersyscall and
// exitsyscall, and the thread hand-offs that sysmon starts when a
// goroutine seems to sit in a syscall): measured, that bookkeeping cost
// more than the reads and writes themselves.

func rawRead(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// epollPoll takes the ready events without waiting (epoll_pwait with a
// zero timeout: every Linux architecture has it).
func epollPoll(epfd int, events []syscall.EpollEvent) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
