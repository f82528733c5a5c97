package cluster_test

import (
	"encoding/json"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/clustertest"
	"github.com/scc-k8s/scc/pkg/ring"
)

// missingBy lists acked publishes some subscriber of their channel never
// got, with the publisher, seq and channel.
type miss struct {
	pub    *publisher
	seq    uint64
	ch     string
	sentAt time.Time
	sub    *subscriber
}

func (l *load) misses() []miss {
	var out []miss
	for _, p := range l.pubs {
		p.mu.Lock()
		for seq, ch := range p.acked {
			for _, s := range l.subs {
				if !s.chans[ch] {
					continue
				}
				s.mu.Lock()
				if s.got[key(p.id, seq)] == 0 {
					out = append(out, miss{p, seq, ch, p.sentAt[seq], s})
				}
				s.mu.Unlock()
			}
		}
		p.mu.Unlock()
	}
	return out
}

// TestBrokerCrash kills a broker without drain under full load. What was
// inside it may be lost (its publishers were told, or it had acked and not
// yet forwarded); everything published after the crash arrives, and the
// dead broker's channels flow again quickly.
func TestBrokerCrash(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 3, Workers: 3})
	l := startLoad(t, c, loadConfig{Channels: 2000, SubsPerWorker: 4, PubsPerWorker: 2, Rate: loadRate()})
	time.Sleep(700 * time.Millisecond)
	v := c.State.Server().View()
	var ids []string
	for _, b := range v.Brokers {
		ids = append(ids, b.Id)
	}
	victim := c.Brokers[1]
	r := ring.New(ids)
	affected := map[string]bool{}
	for _, ch := range l.chans {
		if r.Owner(ch) == victim.ID() {
			affected[ch] = true
		}
	}
	probe := dial(t, c.Workers[2].URL)
	killAt := time.Now()
	c.KillBroker(victim)
	// Kill takes a moment (gRPC's Stop closes every stream): a publish
	// sent meanwhile may still be acked inside the dying broker. One sent
	// after Kill returned cannot be.
	deadAt := time.Now()
	// Probe: publish to every affected channel until each is acked once.
	var mu sync.Mutex
	flowing := map[string]time.Duration{}
	for time.Since(killAt) < 10*time.Second {
		mu.Lock()
		n := len(flowing)
		mu.Unlock()
		if n == len(affected) {
			break
		}
		for ch := range affected {
			mu.Lock()
			_, ok := flowing[ch]
			mu.Unlock()
			if ok {
				continue
			}
			probe.PublishAsync(ch, json.RawMessage(`"probe"`), func(err error) {
				if err == nil {
					mu.Lock()
					if _, ok := flowing[ch]; !ok {
						flowing[ch] = time.Since(killAt)
					}
					mu.Unlock()
				}
			})
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.WaitStable(2)
	stableAfter := time.Since(killAt)
	time.Sleep(1000 * time.Millisecond)
	sent, acked, failed, _, dups, reordered := l.finish()
	mu.Lock()
	var recov []time.Duration
	for _, d := range flowing {
		recov = append(recov, d)
	}
	mu.Unlock()
	sort.Slice(recov, func(i, j int) bool { return recov[i] < recov[j] })
	misses := l.misses()
	lostInside := map[uint64]bool{}
	for _, m := range misses {
		// What was inside the broker when it died was sent just before:
		// a publish acked long before the kill had long been delivered.
		if !affected[m.ch] || m.sentAt.After(deadAt) || m.sentAt.Before(killAt.Add(-500*time.Millisecond)) {
			t.Errorf("acked publish %d/%d on %s (affected %v) sent %v after the kill began (%v after it ended) never reached a subscriber",
				m.pub.id, m.seq, m.ch, affected[m.ch], m.sentAt.Sub(killAt), m.sentAt.Sub(deadAt))
		}
		lostInside[key(m.pub.id, m.seq)] = true
	}
	if len(recov) < len(affected) {
		t.Fatalf("only %d of %d affected channels flowed again within 10 s", len(recov), len(affected))
	}
	t.Logf("broker crash: %d publishes sent, %d acked; lost: %d failed in flight (publishers got an error) + %d acked but inside the dead broker; "+
		"%d affected channels accepting publishes again after p50 %v, max %v; ring stable after %v; duplicates %d, out of order %d",
		sent, acked, failed, len(lostInside), len(affected), recov[len(recov)/2].Round(time.Millisecond),
		recov[len(recov)-1].Round(time.Millisecond), stableAfter.Round(time.Millisecond), dups, reordered)
	if dups > 0 {
		t.Fatalf("%d duplicates", dups)
	}
	if recov[len(recov)-1] > 10*time.Second {
		t.Fatalf("recovery took %v", recov[len(recov)-1])
	}
}

// TestStateRestart kills the state service under load and starts a new
// one: the cluster keeps serving on its last view, members rejoin, the
// view converges, epochs do not go back, and nothing is lost.
func TestStateRestart(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 3, Workers: 3})
	l := startLoad(t, c, loadConfig{Channels: 2000, SubsPerWorker: 4, PubsPerWorker: 2, Rate: loadRate()})
	time.Sleep(500 * time.Millisecond)
	before, _ := c.State.Server().Epoch()
	t0 := time.Now()
	c.RestartState(500 * time.Millisecond)
	c.WaitStable(3)
	after, _ := c.State.Server().Epoch()
	converged := time.Since(t0)
	// A broker change after the restart still migrates without loss.
	c.AddBroker()
	c.WaitStable(4)
	time.Sleep(500 * time.Millisecond)
	sent, acked, failed, missing, dups, _ := l.finish()
	t.Logf("state restart: epoch %d before, %d after; view converged %v after the kill; %d sent, %d acked, %d failed, missing %d, duplicates %d",
		before, after, converged.Round(time.Millisecond), sent, acked, failed, missing, dups)
	if after < before {
		t.Fatalf("epoch went back from %d to %d", before, after)
	}
	if failed > 0 || missing > 0 || dups > 0 {
		t.Fatalf("lost or doubled: %d failed, %d missing, %d duplicates", failed, missing, dups)
	}
}

// TestWorkerCrash kills a worker under load: its clients reconnect to
// another worker and subscribe again; subscribers on the other workers
// lose nothing.
func TestWorkerCrash(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 2, Workers: 3})
	l := startLoad(t, c, loadConfig{Channels: 600, SubsPerWorker: 2, PubsPerWorker: 1, Rate: loadRate() / 4})
	time.Sleep(500 * time.Millisecond)
	victim := c.Workers[0]
	killAt := time.Now()
	c.KillWorker(victim)
	// The victim's clients come back on other workers.
	for _, s := range l.subs {
		if s.worker == 0 {
			deadline := time.Now().Add(10 * time.Second)
			for s.c.Reconnects.Load() == 0 || len(s.c.Subscriptions()) != len(s.chans) {
				if time.Now().After(deadline) {
					t.Fatalf("a client of the dead worker did not come back")
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	c.WaitStable(2)
	back := time.Since(killAt)
	resumeAt := time.Now().Add(300 * time.Millisecond)
	time.Sleep(1500 * time.Millisecond)
	sent, acked, failed, _, dups, _ := l.finish()
	var others, moved int
	for _, m := range l.misses() {
		if m.sub.worker != 0 {
			others++
			t.Errorf("subscriber on a live worker missed %d/%d on %s", m.pub.id, m.seq, m.ch)
		} else if m.sentAt.After(resumeAt) {
			moved++
		}
	}
	t.Logf("worker crash: clients back on other workers after %v; %d sent, %d acked, %d failed (publishers on the dead worker), "+
		"missing on live workers %d, missing after resubscription %d, duplicates %d", back.Round(time.Millisecond),
		sent, acked, failed, others, moved, dups)
	if others > 0 || moved > 0 || dups > 0 {
		t.Fatal("messages lost or doubled")
	}
	if !slices.ContainsFunc(l.subs, func(s *subscriber) bool { return s.worker == 0 }) {
		t.Fatal("no subscriber was on the killed worker")
	}
}
