package cluster

import (
	"sync"
	"time"

	"github.com/scc-k8s/scc/proto/sccv1"
)

// A worker cut off from a broker that is still in the ring (the path
// between them is broken; the broker is not dead, or state would have
// dropped it) cannot serve its clients' channels on that broker: their
// subscribers would miss what the broker acknowledges to others, and their
// publishes would fail. When that lasts Config.PartitionAfter and another
// worker has been ready as long (so the others reach the broker), the
// worker hands its clients over: Config.OnPartition closes them at the
// drain pace, and they reconnect through the gateway to the others (this
// worker reports itself unready meanwhile). It serves again once its link
// is back.

// peers is what the partition watch needs of the cluster views: since
// when each other worker has been ready (and not leaving), by the views.
type peers struct {
	mu         sync.Mutex
	readySince map[string]time.Time
}

func (p *peers) set(v *sccv1.ClusterView) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	since := make(map[string]time.Time, len(v.Workers))
	for _, w := range v.Workers {
		if !w.Ready || w.Draining {
			continue
		}
		if t, ok := p.readySince[w.Id]; ok {
			since[w.Id] = t
		} else {
			since[w.Id] = now
		}
	}
	p.readySince = since
}

// readyFor reports whether a worker other than self has been ready for d:
// one that has just become ready (back from losing the same broker, say)
// is no sign yet that self alone is cut off.
func (p *peers) readyFor(self string, d time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, t := range p.readySince {
		if id != self && time.Since(t) >= d {
			return true
		}
	}
	return false
}

// watchPartition checks every 50 ms for a ring broker whose link has been
// down for Config.PartitionAfter (counted from when its stream ended), and
// calls Config.OnPartition once per such episode when another worker has
// been ready for as long: when a broker every worker lost comes back, the
// workers relink some milliseconds apart, and the last must not take the
// first's readiness for a cut of its own.
func (c *Cluster) watchPartition() {
	defer c.applied.Done()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	downSince := map[string]time.Time{}
	handed := false
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		cutFrom := ""
		c.mu.Lock()
		inRing := map[string]bool{}
		if c.epoch != 0 && c.cur != nil {
			for _, id := range c.cur.IDs() {
				inRing[id] = true
				l := c.links[id]
				if l != nil && l.isUp() {
					delete(downSince, id)
					continue
				}
				if downSince[id].IsZero() {
					downSince[id] = now
					if l != nil {
						if at := l.wentDown(); !at.IsZero() {
							downSince[id] = at
						}
					}
				}
				if now.Sub(downSince[id]) >= c.cfg.PartitionAfter {
					cutFrom = id
				}
			}
		}
		c.mu.Unlock()
		for id := range downSince {
			if !inRing[id] {
				delete(downSince, id)
			}
		}
		if cutFrom == "" {
			handed = false
			continue
		}
		if handed || !c.peers.readyFor(c.cfg.ID, c.cfg.PartitionAfter) {
			continue
		}
		handed = true
		c.m.partitions.Inc()
		c.log.Warn("cut off from a broker the other workers reach: handing this worker's clients over",
			"broker", cutFrom, "down_for", now.Sub(downSince[cutFrom]).Round(time.Millisecond).String())
		c.cfg.OnPartition()
	}
}
