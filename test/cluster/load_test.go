package cluster_test

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/clustertest"
	"github.com/scc-k8s/scc/pkg/client"
)

// loadConfig shapes a steady publish load over a cluster.
type loadConfig struct {
	Channels          int
	SubsPerWorker     int // each worker's subscribers split the channels between them
	PubsPerWorker     int
	Rate              int // messages per second in total
	SubscriberWorkers []int
	// Publishers limits publishing to the first this many workers (0: all).
	Publishers int
}

type subscriber struct {
	c      *client.Client
	worker int // the worker it first connected to
	chans  map[string]bool
	mu     sync.Mutex
	got    map[uint64]int    // publisher<<40|seq -> times received
	last   map[string]uint64 // publisher|channel -> last seq, for order
	order  int               // out-of-order arrivals
}

type publisher struct {
	id     int
	worker int
	c      *client.Client
	seq    atomic.Uint64
	mu     sync.Mutex
	acked  map[uint64]string // seq -> channel
	failed map[uint64]string
	ackAt  map[uint64]time.Time
	sentAt map[uint64]time.Time
}

type load struct {
	t     *testing.T
	cfg   loadConfig
	chans []string
	subs  []*subscriber
	pubs  []*publisher
	stop  chan struct{}
	wg    sync.WaitGroup
}

func key(p int, seq uint64) uint64 { return uint64(p)<<40 | seq }

func startLoad(t *testing.T, c *clustertest.Cluster, cfg loadConfig) *load {
	urls := make([]string, len(c.Workers))
	for i, w := range c.Workers {
		urls[i] = w.URL
	}
	return startLoadOn(t, urls, cfg)
}

// startLoadOn runs the load against workers at urls.
func startLoadOn(t *testing.T, urls []string, cfg loadConfig) *load {
	l := &load{t: t, cfg: cfg, stop: make(chan struct{})}
	for i := 0; i < cfg.Channels; i++ {
		l.chans = append(l.chans, fmt.Sprintf("load-%d", i))
	}
	rotate := func(i int) []string { // the worker's own URL first, then the others
		out := append([]string{}, urls[i:]...)
		return append(out, urls[:i]...)
	}
	for wi := range urls {
		for si := 0; si < cfg.SubsPerWorker; si++ {
			s := &subscriber{c: dial(t, rotate(wi)...), worker: wi, chans: map[string]bool{}, got: map[uint64]int{}, last: map[string]uint64{}}
			for ci := si; ci < len(l.chans); ci += cfg.SubsPerWorker {
				ch := l.chans[ci]
				s.chans[ch] = true
				if err := s.c.Subscribe(t.Context(), ch, s.handle); err != nil {
					t.Fatalf("subscribe %s: %v", ch, err)
				}
			}
			l.subs = append(l.subs, s)
		}
	}
	for wi := range urls {
		if cfg.Publishers > 0 && wi >= cfg.Publishers {
			break
		}
		for pi := 0; pi < cfg.PubsPerWorker; pi++ {
			l.pubs = append(l.pubs, &publisher{id: len(l.pubs) + 1, worker: wi, c: dial(t, rotate(wi)...),
				acked: map[uint64]string{}, failed: map[uint64]string{}, ackAt: map[uint64]time.Time{}, sentAt: map[uint64]time.Time{}})
		}
	}
	for _, p := range l.pubs {
		l.wg.Add(1)
		go l.publish(p)
	}
	return l
}

func (s *subscriber) handle(ch string, data json.RawMessage) {
	var m [2]uint64
	if err := json.Unmarshal(data, &m); err != nil {
		return
	}
	s.mu.Lock()
	s.got[key(int(m[0]), m[1])]++
	ok := fmt.Sprint(m[0], "|", ch)
	if m[1] < s.last[ok] {
		s.order++
	}
	s.last[ok] = m[1]
	s.mu.Unlock()
}

// publish sends at the publisher's share of the rate, round robin over
// the channels, until stopped.
func (l *load) publish(p *publisher) {
	defer l.wg.Done()
	perSec := l.cfg.Rate / len(l.pubs)
	const tick = 5 * time.Millisecond
	perTick := max(1, perSec*int(tick)/int(time.Second))
	t := time.NewTicker(tick)
	defer t.Stop()
	next := p.id * 7
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		for range perTick {
			seq := p.seq.Add(1)
			ch := l.chans[next%len(l.chans)]
			next++
			now := time.Now()
			p.mu.Lock()
			p.sentAt[seq] = now
			p.mu.Unlock()
			p.c.PublishAsync(ch, json.RawMessage(fmt.Sprintf("[%d,%d]", p.id, seq)), func(err error) {
				p.mu.Lock()
				if err != nil {
					p.failed[seq] = ch
				} else {
					p.acked[seq] = ch
					p.ackAt[seq] = time.Now()
				}
				p.mu.Unlock()
			})
		}
	}
}

// finish stops publishing, waits for every ack and delivery, and checks:
// every acked publish reached every subscriber of its channel exactly once
// and nothing arrived twice.
func (l *load) finish() (sent, acked, failed, missing, dups, reordered int) {
	close(l.stop)
	l.wg.Wait()
	deadline := time.Now().Add(15 * time.Second)
	for _, p := range l.pubs {
		for {
			p.mu.Lock()
			n := len(p.acked) + len(p.failed)
			p.mu.Unlock()
			if uint64(n) >= p.seq.Load() || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	expect := func() int { return len(l.misses()) }
	// Wait for deliveries to stop arriving (or for nothing to be missing).
	for last, still := -1, 0; time.Now().Before(deadline) && still < 4; {
		time.Sleep(50 * time.Millisecond)
		if n := l.delivered(); n != last {
			last, still = n, 0
		} else if still++; expect() == 0 {
			break
		}
	}
	missing = expect()
	for _, p := range l.pubs {
		p.mu.Lock()
		sent += int(p.seq.Load())
		acked += len(p.acked)
		failed += len(p.failed)
		p.mu.Unlock()
	}
	for _, s := range l.subs {
		s.mu.Lock()
		for _, n := range s.got {
			if n > 1 {
				dups += n - 1
			}
		}
		reordered += s.order
		s.mu.Unlock()
	}
	return
}

func (l *load) delivered() int {
	n := 0
	for _, s := range l.subs {
		s.mu.Lock()
		for _, c := range s.got {
			n += c
		}
		s.mu.Unlock()
	}
	return n
}

func loadRate() int {
	if raceEnabled {
		return 3000 // the race detector slows everything ~5-10x; correctness is what it checks
	}
	return 21000 // the ticker rounds down: this gives at least 20,000/s
}

// TestNoLossWhileBrokersChange is the make-before-break promise: under a
// steady load, brokers are added and removed (drained) and every acked
// message reaches every subscriber exactly once.
func TestNoLossWhileBrokersChange(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 3, Workers: 3})
	l := startLoad(t, c, loadConfig{Channels: 2000, SubsPerWorker: 4, PubsPerWorker: 2, Rate: loadRate()})
	start := time.Now()
	step := func(what string, f func(), brokers int) {
		t0 := time.Now()
		f()
		c.WaitStable(brokers)
		epoch, _ := c.State.Server().Epoch()
		t.Logf("%-22s ring epoch %d, %d brokers, stable after %v", what, epoch, brokers, time.Since(t0).Round(time.Millisecond))
		time.Sleep(300 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	step("add broker", func() { c.AddBroker() }, 4)
	step("add broker", func() { c.AddBroker() }, 5)
	step("drain broker", func() { c.DrainBroker(c.Brokers[0]) }, 4)
	step("drain broker", func() { c.DrainBroker(c.Brokers[0]) }, 3)
	step("drain broker", func() { c.DrainBroker(c.Brokers[0]) }, 2)
	step("add broker", func() { c.AddBroker() }, 3)
	elapsed := time.Since(start)
	sent, acked, failed, missing, dups, reordered := l.finish()
	t.Logf("checked: %d publishes sent (%.0f/s) over %v, %d acked, %d failed, %d deliveries; missing %d, duplicates %d, out of order %d",
		sent, float64(sent)/elapsed.Seconds(), elapsed.Round(time.Millisecond), acked, failed, l.delivered(), missing, dups, reordered)
	if failed > 0 || missing > 0 || dups > 0 {
		t.Fatalf("lost or doubled messages: %d failed, %d missing, %d duplicates", failed, missing, dups)
	}
	// Per publisher and channel, order holds through every switch: a
	// publisher whose channel moves waits for the old owner's acks first.
	if reordered > 0 {
		t.Fatalf("%d deliveries out of their publisher's order", reordered)
	}
	if acked == 0 {
		t.Fatal("nothing was published")
	}
}
