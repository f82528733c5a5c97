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

import (
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
	case n == 0 && time.Since(g.heldSince) >= loadLag:
		s.unghostLocked(g, "has no clients left")
	}
}

// unghostLocked lets a ghost's subscriptions go. s.mu is held.
func (s *Server) unghostLocked(g *link, why string) {
	delete(s.ghosts, g.worker)
	s.unsubscribeAllLocked(g)
	s.m.ghosts.Dec()
	s.log.Info("lost worker link's subscriptions released", "worker", g.worker, "why", why)
}

// SetWorkers takes the workers of a cluster view (with their load): the
// subscriptions held for a lost link go once its worker has left the
// cluster or has no clients left.
func (s *Server) SetWorkers(ws []*sccv1.Member) {
	load := make(map[string]uint64, len(ws))
	for _, w := range ws {
		load[w.Id] = w.Load
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.workers = load
	for _, g := range s.ghosts {
		s.checkLocked(g)
	}
}

// HeldWorkers is the number of workers whose lost link's subscriptions are
// held.
func (s *Server) HeldWorkers() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.ghosts)
}
