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
// worker is ready (so the others reach the broker), the worker hands its
// clients over: Config.OnPartition closes them at the drain pace, and they
// reconnect through the gateway to the others (this worker reports itself
// unready meanwhile). It serves again once its link is back.

// peers is what the partition watch needs of the newest cluster view.
type peers struct {
	mu      sync.Mutex
	workers []*sccv1.Member
}

func (p *peers) set(v *sccv1.ClusterView) {
	p.mu.Lock()
	p.workers = v.Workers
	p.mu.Unlock()
}

// otherReady reports whether a worker other than self is ready and not
// leaving.
func (p *peers) otherReady(self string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.workers {
		if w.Id != self && w.Ready && !w.Draining {
			return true
		}
	}
	return false
}

// watchPartition checks every 50 ms for a ring broker whose link has been
// down for Config.PartitionAfter (counted from when its stream ended), and
// calls Config.OnPartition once per such episode when another worker is
// ready.
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
		if handed || !c.peers.otherReady(c.cfg.ID) {
			continue
		}
		handed = true
		c.m.partitions.Inc()
		c.log.Warn("cut off from a broker the other workers reach: handing this worker's clients over",
			"broker", cutFrom, "down_for", now.Sub(downSince[cutFrom]).Round(time.Millisecond).String())
		c.cfg.OnPartition()
	}
}
