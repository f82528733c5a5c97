package worker

import "sync/atomic"

const (
	// maxIdleWriters bounds the goroutines kept waiting for a socket to
	// write.
	maxIdleWriters = 4096
	// minIdleWriters are kept however quiet the server is.
	minIdleWriters = 64
)

// writers runs sockets' write loops. A socket has a writer only while it
// has frames queued; starting a fresh goroutine for each such burst cost
// a stack growth on the write path every time (runtime.copystack, 11-13%
// of the server's CPU in the fan-out profile), so goroutines that finish
// a burst wait here for the next socket instead. The sweeper trims them to
// what the last interval needed at its peak: every idle goroutine is a
// stack the garbage collector scans on each cycle.
type writers struct {
	tasks chan *Socket // unbuffered: a send succeeds only into a waiting writer
	idle  atomic.Int32
	busy  atomic.Int32
	peak  atomic.Int32 // most writers busy at once since the last trim
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
		b := w.busy.Add(1)
		for p := w.peak.Load(); b > p && !w.peak.CompareAndSwap(p, b); p = w.peak.Load() {
		}
		s.writeLoop()
		w.busy.Add(-1)
		if w.idle.Add(1) > maxIdleWriters {
			w.idle.Add(-1)
			return
		}
		select {
		case s = <-w.tasks:
			w.idle.Add(-1)
			if s == nil { // trimmed
				return
			}
		case <-w.stop:
			w.idle.Add(-1)
			return
		}
	}
}

// trim lets idle writers beyond the peak of the last interval go.
func (w *writers) trim() {
	keep := max(minIdleWriters, w.peak.Swap(w.busy.Load()))
	for n := w.idle.Load() - keep; n > 0; n-- {
		select {
		case w.tasks <- nil:
		default:
			return
		}
	}
}
