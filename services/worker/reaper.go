package worker

import "sync"

// reaper finishes the sockets whose connection ended, one at a time on a
// goroutine of its own that runs only while some are waiting. A socket's
// teardown (close(2), its unsubscribes, its removal; a third of the
// worker's CPU when 10,000 clients leave at once) used to run on the
// socket's own reader goroutine: a storm of disconnects then made
// thousands of goroutines runnable at once, each with tens of
// microseconds of work, and a new client's accept, upgrade and handshake
// waited behind all of them (fresh handshakes' p99 81-167 ms while
// 20,000 sockets left, 21-39 ms with the reaper). Now a reader that sees
// its connection end gives back its read buffer first (a reader that kept
// it until the reaper came made the next woken reader allocate one: the
// accept goroutine then still waited 125 ms), queues the socket here and
// exits: the run queue drains quickly, and the teardown takes one
// processor's turn at a time beside everyone else's.
//
// Disconnect hooks are user code and may block: finish runs them on a
// goroutine of their own per socket, not on the reaper.
type reaper struct {
	mu      sync.Mutex
	queue   []*Socket
	running bool
}

// add queues s for finishing, starting the reaper if it is not running.
func (r *reaper) add(s *Socket) {
	r.mu.Lock()
	r.queue = append(r.queue, s)
	start := !r.running
	r.running = true
	r.mu.Unlock()
	if start {
		go r.run()
	}
}

func (r *reaper) run() {
	var batch []*Socket
	for {
		r.mu.Lock()
		if len(r.queue) == 0 {
			r.running = false
			r.queue = nil // a storm's buffer goes with it
			r.mu.Unlock()
			return
		}
		batch, r.queue = r.queue, batch[:0]
		r.mu.Unlock()
		for i, s := range batch {
			finishGuarded(s)
			batch[i] = nil
		}
	}
}

// finishGuarded finishes s; a panic in it is logged and counted, and the
// socket no longer holds up a shutdown, but the reaper and the process go
// on.
func finishGuarded(s *Socket) {
	defer func() {
		if v := recover(); v != nil {
			s.srv.panicked("socket teardown", s, v)
			s.srv.readers.Done()
		}
	}()
	s.finish()
}
