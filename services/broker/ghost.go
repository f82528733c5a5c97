package broker

// A worker's link can end while the worker lives on with clients
// subscribed through it: the path between them was cut (without a reset,
// noticed by either side's link timeout), or the link fell too far behind
// and was cut. Until the worker's next link has subscribed again, this
// broker would otherwise count it subscribed nowhere and acknowledge
// publishes its subscribers never get. So a link that ends without its
// worker closing it leaves its subscriptions behind as a ghost, when its
// worker is one that sends REPLACE and the cluster view still shows it
// in the cluster: a publish to one of those channels fails (errGhost)
// instead. The worker's new link sends REPLACE behind its subscribes, and
// the ghost goes (so do older links of the worker still open); it goes
// too when the view shows the worker gone (killed, say) or, in a report
// made after the link was lost, without clients (it handed them to other
// workers), or after ghostTTL.
//
// A worker reports the streams it lost (Member.lost_links, through state):
// the broker drops such a stream at once if it still has it, rather than
// at its own link timeout, and a report that lists the stream lost and
// shows the worker without clients was made after the loss, so the ghost
// goes as soon as it comes. Without such reports (an older worker), a
// report without clients counts once loadLag has passed since the loss.

import (
	"errors"
	"time"

	"github.com/scc-k8s/scc/proto/sccv1"
)

// ghostTTL bounds how long a lost link's subscriptions are held when
// nothing else ends them (no cluster view comes, say): about a worker's
// drain timeout, by which time its clients are elsewhere.
const ghostTTL = 30 * time.Second

// loadLag bounds how old the load a view shows may be: a worker reports
// it each second and state passes changes on each second.
const loadLag = 3 * time.Second

// errReportedLost ends a stream whose worker reported it lost before its
// first message arrived.
var errReportedLost = errors.New("broker: the worker reported this stream lost")

// errGhost fails a publish to a channel a worker whose link was lost is
// subscribed to.
const errGhost = "broker: a subscribed worker is unreachable; it may miss this message"

// replace ends the other links of l's worker, and its ghost: l now
// carries every subscription the worker wants here. From now on the old
// links take no delivery; what they were sent and did not confirm fails
// when they are dropped. (A worker gives a silent link up by ending it;
// the end may reach this broker only after the new link, once the path
// heals.)
func (s *Server) replace(l *link) {
	if l.worker == "" {
		return
	}
	var old []*link
	s.mu.Lock()
	for o := range s.links {
		if o != l && o.worker == l.worker {
			old = append(old, o)
		}
	}
	if g := s.ghosts[l.worker]; g != nil {
		s.unghostLocked(g, "replaced")
	}
	s.mu.Unlock()
	for _, o := range old {
		o.superseded.Store(true)
		o.mu.Lock()
		o.closed = true
		o.queue = nil
		o.mu.Unlock()
		o.cut()
	}
	if len(old) > 0 {
		s.m.replaced.Add(float64(len(old)))
		s.log.Info("worker link replaced by a new one", "worker", l.worker, "old", len(old))
	}
}

// keepLocked makes a dropped link a ghost when it ended without its
// worker closing it (or replacing it) and its worker is still in the
// cluster; it reports whether it did. s.mu is held.
func (s *Server) keepLocked(l *link) bool {
	if l.clean.Load() || l.superseded.Load() || !l.confirms || !l.replaces || l.worker == "" || len(l.subs) == 0 {
		return false
	}
	if _, member := s.workers[l.worker]; s.workers != nil && !member {
		return false
	}
	if s.handedOverLocked(l) {
		return false
	}
	if g := s.ghosts[l.worker]; g != nil {
		s.unghostLocked(g, "superseded")
	}
	l.ghost.Store(true)
	l.heldSince = time.Now()
	s.ghosts[l.worker] = l
	s.m.ghosts.Inc()
	s.log.Info("lost worker link's subscriptions held: publishes to them fail until it returns or leaves",
		"worker", l.worker, "channels", len(l.subs))
	// The view may have shown the worker without clients already (and
	// say nothing new for a while): look again once a report made after
	// the loss has had time to come.
	time.AfterFunc(loadLag, func() {
		s.mu.Lock()
		s.checkLocked(l)
		s.mu.Unlock()
	})
	time.AfterFunc(ghostTTL, func() {
		s.mu.Lock()
		if s.ghosts[l.worker] == l {
			s.unghostLocked(l, "time limit")
		}
		s.mu.Unlock()
	})
	return true
}

// checkLocked lets ghost g go when the last view shows its worker gone,
// or without clients in a report made after the loss. s.mu is held.
func (s *Server) checkLocked(g *link) {
	if s.ghosts[g.worker] != g || s.workers == nil {
		return
	}
	n, member := s.workers[g.worker]
	switch {
	case !member:
		s.unghostLocked(g, "left the cluster")
	case s.handedOverLocked(g):
		s.unghostLocked(g, "reported the link lost and has no clients left")
	case n == 0 && time.Since(g.heldSince) >= loadLag:
		s.unghostLocked(g, "has no clients left")
	}
}

// reportedLostLocked reports whether l's worker has reported the stream
// lost. s.mu is held.
func (s *Server) reportedLostLocked(l *link) bool {
	return l.num != 0 && s.lost[l.worker] >= l.num
}

// handedOverLocked reports whether the last view shows l's worker without
// clients in a report that lists l lost, so made after the loss. s.mu is
// held.
func (s *Server) handedOverLocked(l *link) bool {
	n, member := s.workers[l.worker]
	return member && n == 0 && s.reportedLostLocked(l)
}

// unghostLocked lets a ghost's subscriptions go. s.mu is held.
func (s *Server) unghostLocked(g *link, why string) {
	delete(s.ghosts, g.worker)
	s.unsubscribeAllLocked(g)
	s.m.ghosts.Dec()
	s.log.Info("lost worker link's subscriptions released", "worker", g.worker, "why", why)
}

// SetWorkers takes the workers of a cluster view (with their load and lost
// links): the streams a worker reports lost are dropped, and the
// subscriptions held for a lost link go once its worker has left the
// cluster or has no clients left.
func (s *Server) SetWorkers(ws []*sccv1.Member) {
	self := ""
	if o := s.owner.Load(); o != nil {
		self = o.id
	}
	load := make(map[string]uint64, len(ws))
	lost := make(map[string]uint64)
	for _, w := range ws {
		load[w.Id] = w.Load
		for _, ll := range w.LostLinks {
			if ll.BrokerId == self && self != "" {
				lost[w.Id] = max(lost[w.Id], ll.Link)
			}
		}
	}
	var gone []*link
	s.mu.Lock()
	s.workers, s.lost = load, lost
	for l := range s.links {
		if s.reportedLostLocked(l) {
			gone = append(gone, l)
		}
	}
	for _, g := range s.ghosts {
		s.checkLocked(g)
	}
	s.mu.Unlock()
	for _, l := range gone {
		if !l.reported.Swap(true) {
			s.m.reported.Inc()
			s.log.Info("worker reports its link lost: dropped", "worker", l.worker, "link", l.num)
			l.cut()
		}
	}
}

// HeldWorkers is the number of workers whose lost link's subscriptions are
// held.
func (s *Server) HeldWorkers() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.ghosts)
}
