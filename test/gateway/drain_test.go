package gateway_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/clustertest"
	"github.com/scc-k8s/scc/pkg/client"
	"github.com/scc-k8s/scc/pkg/codec"
	gateway "github.com/scc-k8s/scc/services/ingress-gw"
	"github.com/scc-k8s/scc/services/worker"
)

// subscriber records what one client got and when its connection closed.
type subscriber struct {
	ch string
	mu sync.Mutex
	// got: seq -> when it arrived
	got      map[int64]time.Time
	closedAt time.Time
	code     int
	backAt   time.Time // first delivery after the reconnect
	connects int
}

// A message the broker applies just after the drained worker wrote a
// socket's close frame cannot reach that socket (nothing may follow a
// close frame), and its ack (broker, the publisher's worker, the
// publisher) may travel faster than the close (worker, gateway, the
// subscriber): such an ack can arrive before the close is seen. The test
// counts these apart: a lost message older than the last one the client
// got before its close (a hole) is a bug; one acked more than inFlight
// before the close is too; the rest crossed the close in flight.
const inFlight = 100 * time.Millisecond

// TestWorkerDrainLosesNothing is the drain's guarantee measured with Go
// clients, whose clocks read the moment a frame arrives: 3 workers behind
// the gateway, 3,000 subscribers, publishes at 600/s; one worker drained
// at 1,000 closes per second. No acknowledged message is lost to a client
// of a surviving worker, none acknowledged before a drained client's
// close frame arrived is lost to it, and every drained client is back and
// receiving within 5 s. (The official client's run is TestDrainUnderLoad
// in test/interop.)
func TestWorkerDrainLosesNothing(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("3,000 clients: run without -race (scripts/test.sh runs it so)")
	}
	const nSubs, nChannels, rate = 3000, 100, 600
	c := clustertest.Start(t, clustertest.Options{Brokers: 2, Workers: 3, Worker: worker.Config{DrainRate: 1000}})
	g := c.AddGateway(gateway.Config{})
	c.WaitRoutable(3)

	subs := make([]*subscriber, nSubs)
	var ready sync.WaitGroup
	for i := range subs {
		s := &subscriber{ch: "d-" + strconv.Itoa(i%nChannels), got: make(map[int64]time.Time)}
		subs[i] = s
		cl := client.New(client.Options{URL: g.URL, ReconnectDelay: time.Second})
		cl.OnDisconnect(func(ce *client.CloseError) {
			s.mu.Lock()
			if s.closedAt.IsZero() {
				s.closedAt, s.code = time.Now(), ce.Code
			}
			s.mu.Unlock()
		})
		cl.OnConnect(func(client.Status) { s.mu.Lock(); s.connects++; s.mu.Unlock() })
		ready.Add(1)
		go func() {
			defer ready.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := cl.Connect(ctx); err != nil {
				t.Error(err)
				return
			}
			err := cl.Subscribe(ctx, s.ch, func(_ string, d json.RawMessage) {
				seq, _ := codec.Int(d)
				now := time.Now()
				s.mu.Lock()
				s.got[seq] = now
				if !s.closedAt.IsZero() && s.backAt.IsZero() && s.connects > 1 {
					s.backAt = now
				}
				s.mu.Unlock()
			})
			if err != nil {
				t.Error(err)
			}
		}()
		t.Cleanup(cl.Close)
	}
	ready.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Publishers on the surviving workers' side of the gateway too.
	type ack struct {
		ch string
		at time.Time
	}
	var ackMu sync.Mutex
	acked := make(map[int64]ack)
	var failed, sent atomic.Int64
	// Publishers on the workers that stay (a publisher on the drained one
	// reconnects, and its channels would go quiet meanwhile).
	pubs := append(dialMany(t, c.Workers[1].URL, 2), dialMany(t, c.Workers[2].URL, 2)...)
	stop := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		start := time.Now()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var seq int64
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for due := int64(time.Since(start).Seconds() * rate); seq < due; seq++ {
				ch, n := "d-"+strconv.Itoa(int(seq%nChannels)), seq
				sent.Add(1)
				pubs[seq%4].PublishAsync(ch, json.RawMessage(strconv.FormatInt(n, 10)), func(err error) {
					if err != nil {
						failed.Add(1)
						return
					}
					ackMu.Lock()
					acked[n] = ack{ch, time.Now()}
					ackMu.Unlock()
				})
			}
		}
	}()
	time.Sleep(time.Second)
	target := c.Workers[0]
	drainAt := time.Now()
	t.Logf("draining %s with %d sockets", target.ID, target.Server.Clients())
	go c.DrainWorker(target, 10*time.Second)
	time.Sleep(6 * time.Second)
	close(stop)
	<-pubDone
	time.Sleep(time.Second)

	ackMu.Lock()
	defer ackMu.Unlock()
	var drained, survivors, survivorLost, holes, lostBeforeClose, crossed, missedAway, notBack int
	var crossedMax time.Duration
	var lastBack time.Duration
	codes := map[int]int{}
	for _, s := range subs {
		s.mu.Lock()
		if s.closedAt.IsZero() || s.closedAt.Before(drainAt) {
			survivors++
			for seq, a := range acked {
				if a.ch == s.ch {
					if _, ok := s.got[seq]; !ok {
						survivorLost++
					}
				}
			}
			s.mu.Unlock()
			continue
		}
		drained++
		codes[s.code]++
		var last int64 = -1 // the newest message it got before its close
		for seq, at := range s.got {
			if at.Before(s.closedAt) && seq > last {
				last = seq
			}
		}
		for seq, a := range acked {
			if a.ch != s.ch {
				continue
			}
			if _, ok := s.got[seq]; ok {
				continue
			}
			switch {
			case seq < last:
				holes++
			case a.at.Before(s.closedAt.Add(-inFlight)):
				lostBeforeClose++
			case a.at.Before(s.closedAt):
				crossed++
				crossedMax = max(crossedMax, s.closedAt.Sub(a.at))
			default:
				missedAway++
			}
		}
		if s.backAt.IsZero() {
			notBack++
		} else {
			lastBack = max(lastBack, s.backAt.Sub(drainAt))
		}
		s.mu.Unlock()
	}
	t.Logf("drain: %d subscribers, %d drained (close codes %v), %d on the surviving workers", nSubs, drained, codes, survivors)
	t.Logf("drain: published %d, acked %d, failed %d", sent.Load(), len(acked), failed.Load())
	t.Logf("drain: lost to survivors %d; lost to drained clients: holes %d, acked more than %v before their close %d, crossed the close in flight %d (acked at most %v before it); missed while reconnecting %d (acked after their close)",
		survivorLost, holes, inFlight, lostBeforeClose, crossed, crossedMax.Round(time.Millisecond), missedAway)
	t.Logf("drain: every drained client back and receiving within %v (%d not back)", lastBack.Round(time.Millisecond), notBack)
	if drained < 700 || codes[4000] != drained {
		t.Errorf("%d drained, codes %v: want about 1,000, all 4000", drained, codes)
	}
	if survivorLost > 0 || holes > 0 || lostBeforeClose > 0 {
		t.Errorf("lost: %d to survivors; to drained clients %d holes and %d acked well before their close", survivorLost, holes, lostBeforeClose)
	}
	if notBack > 0 || lastBack > 5*time.Second {
		t.Errorf("%d not back; last back after %v", notBack, lastBack)
	}
}
