//go:build linux

package gateway

// Clients whose bytes Go must handle (TLS: the gateway decrypts them) on
// tunnel streams. The session stays in its relay loop; a goroutine reads
// the client into Data frames and one writes the worker's bytes to it,
// both under the same windows as a client in the loop.

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/scc-k8s/scc/internal/tunnel"
)

// pumpedBuf is a pumped client's read buffer.
const pumpedBuf = 4 << 10

// pumped is a client on a stream, moved by goroutines.
type pumped struct {
	c    net.Conn
	out  []byte        // the worker's bytes for the client; guarded by r.mu
	gone bool          // closed; guarded by r.mu
	wake chan struct{} // cap 1: out grew, or the worker closed
	room chan struct{} // cap 1: window granted, or the session's queue drained
	done chan struct{} // closed when the client is closed
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// attachPumped is attach for a client that is not a plain socket.
func (st *stream) attachPumped(c net.Conn, done func()) error {
	ss := st.ss
	r := ss.r
	r.mu.Lock()
	if ss.dead || st.hs == nil {
		r.mu.Unlock()
		c.Close()
		return errSessionEnded
	}
	st.tail.feed(st.hs.buf)
	pc := &pumped{c: c, out: st.hs.buf, wake: make(chan struct{}, 1), room: make(chan struct{}, 1), done: make(chan struct{})}
	st.hs = nil
	st.pc, st.done = pc, done
	r.pumped[st] = struct{}{}
	r.n++
	r.mu.Unlock()
	go r.pumpIn(st, pc)
	go r.pumpOut(st, pc)
	return nil
}

// pumpIn reads the client into Data frames, within the stream's window
// and while the session's queue has room.
func (r *relay) pumpIn(st *stream, pc *pumped) {
	ss := st.ss
	buf := make([]byte, pumpedBuf)
	for {
		n, err := pc.c.Read(buf)
		p := buf[:n]
		for len(p) > 0 {
			r.mu.Lock()
			if pc.gone || st.closed || ss.dead {
				r.mu.Unlock()
				break // the worker is not reading: the bytes have nowhere to go
			}
			if st.sendWin == 0 || len(ss.out) >= outHigh {
				if len(ss.out) >= outHigh && !st.outPaused {
					st.outPaused = true
					ss.paused = append(ss.paused, st)
				}
				r.mu.Unlock()
				select {
				case <-pc.room:
				case <-pc.done:
					return
				}
				continue
			}
			k := min(len(p), st.sendWin)
			st.sendWin -= k
			ss.out = tunnel.AppendData(ss.out, st.id, p[:k])
			r.in.n.Add(int64(k))
			r.flushSession(ss)
			r.mu.Unlock()
			p = p[k:]
		}
		if err != nil {
			r.mu.Lock()
			if errors.Is(err, io.EOF) && !pc.gone { // the client finished sending
				if !st.closed && !ss.dead {
					ss.out = tunnel.AppendHeader(ss.out, tunnel.Fin, st.id, 0)
					r.flushSession(ss)
				}
				if st.halfAt.IsZero() {
					st.halfAt = time.Now()
				}
			} else {
				r.closePumped(st, true)
			}
			r.mu.Unlock()
			return
		}
	}
}

// pumpOut writes the worker's bytes to the client and grants them back.
func (r *relay) pumpOut(st *stream, pc *pumped) {
	ss := st.ss
	for {
		r.mu.Lock()
		if len(pc.out) == 0 {
			if st.closed || ss.dead || pc.gone {
				r.closePumped(st, false)
				r.mu.Unlock()
				return
			}
			r.mu.Unlock()
			select {
			case <-pc.wake:
			case <-pc.done:
				return
			}
			continue
		}
		b := pc.out
		pc.out = nil
		r.mu.Unlock()
		_, err := pc.c.Write(b)
		r.mu.Lock()
		if err != nil {
			r.closePumped(st, true)
		} else {
			r.out.n.Add(int64(len(b)))
			r.consumed(st, len(b))
			r.flushDirty()
		}
		r.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// closePumped closes a pumped client and ends its stream (see
// closeClient). r.mu is held.
func (r *relay) closePumped(st *stream, reset bool) {
	pc := st.pc
	if pc == nil || pc.gone {
		return
	}
	pc.gone = true
	close(pc.done)
	go pc.c.Close() // a TLS close writes an alert: not under the loop's lock
	delete(r.pumped, st)
	r.n--
	r.dropStream(st, reset)
	r.flushDirty()
	if st.done != nil {
		go st.done()
	}
}
