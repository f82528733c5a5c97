package worker

import "sync/atomic"

// maxIdleWriters bounds the goroutines kept waiting for a socket to write.
const maxIdleWriters = 4096

// writers runs sockets' write loops. A socket has a writer only while it
// has frames queued; starting a fresh goroutine for each such burst cost
// a stack growth on the write path every time (runtime.copystack, 11-13%
// of the server's CPU in the fan-out profile), so goroutines that finish
// a burst wait here for the next socket instead, up to maxIdleWriters.
type writers struct {
	tasks chan *Socket // unbuffered: a send succeeds only into a waiting writer
	idle  atomic.Int32
	stop  <-chan struct{}
}

func newWriters(stop <-chan struct{}) *writers {
	return &writers{tasks: make(chan *Socket), stop: stop}
}

// start runs s.writeLoop on a waiting writer, or on a new one.
func (w *writers) start(s *Socket) {
	select {
	case w.tasks <- s:
	default:
		go w.run(s)
	}
}

func (w *writers) run(s *Socket) {
	for {
		s.writeLoop()
		if w.idle.Add(1) > maxIdleWriters {
			w.idle.Add(-1)
			return
		}
		select {
		case s = <-w.tasks:
			w.idle.Add(-1)
		case <-w.stop:
			w.idle.Add(-1)
			return
		}
	}
}
