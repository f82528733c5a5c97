package worker

// A socket's outbound queue and the writer that drains it.

import (
	"sync"
	"time"

	"github.com/scc-k8s/scc/internal/ws"
)

// send queues one encoded frame. It never blocks: a socket whose queue
// passes MaxPendingBytes is closed as a slow consumer. It reports whether
// the frame was queued.
func (s *Socket) send(frame []byte) bool {
	q := &s.out
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, frame)
	q.bytes += len(frame)
	if q.bytes > s.srv.cfg.MaxPendingBytes {
		q.closed = true
		clear(q.items)
		q.items = q.items[:0]
		q.bytes = 0
		q.mu.Unlock()
		s.slowConsumer()
		return false
	}
	start := !q.writing
	q.writing = true
	q.mu.Unlock()
	s.srv.metrics.messagesOut.Inc()
	if start {
		s.srv.writers.start(s)
	}
	return true
}

func (s *Socket) sendPing() {
	q := &s.out
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.ping = true
	start := !q.writing
	q.writing = true
	q.mu.Unlock()
	if start {
		s.srv.writers.start(s)
	}
}

// writeLoop drains the queue: it runs while frames are pending and exits
// when the queue is empty, so an idle socket has no writer goroutine.
// Frames queued together go out as one JSON array (a batch) in one write.
// batchBufs recycles the buffers batches are built in: a writer exists
// only while its socket has frames queued, so a per-writer buffer would
// be allocated again for every burst.
var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// noHeader is the room a batch buffer starts with, for ws.Conn.WriteFramed.
var noHeader [ws.MaxHeader]byte

func (s *Socket) writeLoop() {
	q := &s.out
	bp := batchBufs.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() {
		if cap(buf) <= 2*maxBatchBytes {
			*bp = buf[:0]
			batchBufs.Put(bp)
		}
	}()
	for {
		q.mu.Lock()
		items, ping, closing, code, text := q.items, q.ping, q.closing, q.closeCode, q.closeText
		q.items, q.spare = q.spare, nil
		q.bytes, q.ping = 0, false
		if closing && len(items) == 0 {
			// The close goes out now, and nothing is queued behind it (a
			// drain's close left the queue open until this moment).
			q.closing, q.closed = false, true
		} else {
			closing = false // the frames first; the close on a later turn
		}
		if len(items) == 0 && !ping && !closing {
			q.writing = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()

		var err error
		if ping {
			p := pingV2
			if s.v1 {
				p = pingV1
			}
			err = s.ws.WriteMessage(ws.OpText, p)
		}
		for i := 0; err == nil && i < len(items); {
			if len(items[i]) >= maxBatchBytes {
				err = s.ws.WriteMessage(ws.OpText, items[i])
				i++
				continue
			}
			// The frame is built behind room for its header: batch and
			// header leave in one write.
			buf = append(buf[:0], noHeader[:]...)
			j := i + 1
			if i < len(items)-1 && len(items[i])+len(items[j]) < maxBatchBytes {
				buf = append(append(buf, '['), items[i]...)
				for ; j < len(items) && len(buf)-ws.MaxHeader+len(items[j]) < maxBatchBytes; j++ {
					buf = append(append(buf, ','), items[j]...)
				}
				buf = append(buf, ']')
			} else {
				buf = append(buf, items[i]...) // alone: sent bare
			}
			err = s.ws.WriteFramed(ws.OpText, buf)
			i = j
		}
		if err == nil && closing {
			s.markClosed(code, text) // a drain's close marks it only now
			// The last frame: ws.Conn refuses anything after it.
			err = s.ws.WriteClose(code, text)
			// The reader finishes when the peer's close frame arrives or,
			// at the latest, after closeGrace.
			_ = s.ws.NetConn().SetReadDeadline(time.Now().Add(closeGrace))
		}
		clear(items)
		q.mu.Lock()
		if q.spare == nil {
			q.spare = items[:0]
		}
		q.mu.Unlock()
		if err != nil {
			q.mu.Lock()
			q.closed, q.writing = true, false
			clear(q.items)
			q.items = nil
			q.mu.Unlock()
			s.ws.Close() // the reader sees it and cleans up
			return
		}
	}
}

func (s *Socket) slowConsumer() {
	s.srv.metrics.slowConsumers.Inc()
	s.markClosed(CloseSlowConsumer, "slow consumer")
	s.srv.log.Debug("closing slow consumer", "conn", s.id)
	// Say why if no write is stuck on the peer (briefly: it may not be
	// reading at all), then cut the connection.
	_ = s.ws.NetConn().SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	_ = s.ws.TryWriteClose(CloseSlowConsumer, "slow consumer")
	s.ws.Close()
}
