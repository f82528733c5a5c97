package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/scc-k8s/scc/pkg/client"
)

// goLoad is the Go client's share of the load: subscribers, each on one
// channel, and publishers, each channel always published by the same one
// (so its sequence numbers must arrive in order), through the gateway.
type goLoad struct {
	subs []*goSub
	pubs []*client.Client

	mu       sync.Mutex
	sent     int
	acked    map[int]pubRecord
	failed   []pubRecord
	stopping bool
	done     chan struct{}
}

type pubRecord struct {
	ch  string
	at  time.Time // ack or failure
	err string
}

type goSub struct {
	c  *client.Client
	ch string

	mu        sync.Mutex
	intervals []interval // subscribed from start to end (zero: still)
	got       map[int]int
	firstAt   map[int]time.Time
	last      int
	reordered int
}

type interval struct{ start, end time.Time }

func startGoLoad(t *testing.T, url string, subs, channels, rate int) *goLoad {
	l := &goLoad{acked: map[int]pubRecord{}, done: make(chan struct{})}
	opts := client.Options{URL: url, ReconnectDelay: 200 * time.Millisecond, ReconnectMaxDelay: 2 * time.Second, AckTimeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < subs; i++ {
		s := &goSub{c: client.New(opts), ch: fmt.Sprint("go-", i%channels), got: map[int]int{}, firstAt: map[int]time.Time{}, last: -1}
		s.c.OnSubscribed(func(string) {
			s.mu.Lock()
			s.intervals = append(s.intervals, interval{start: time.Now()})
			s.mu.Unlock()
		})
		s.c.OnDisconnect(func(*client.CloseError) {
			now := time.Now()
			s.mu.Lock()
			if n := len(s.intervals); n > 0 && s.intervals[n-1].end.IsZero() {
				s.intervals[n-1].end = now
			}
			s.mu.Unlock()
		})
		if err := s.c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.c.Subscribe(ctx, s.ch, func(_ string, data json.RawMessage) {
			var m struct{ Seq int }
			_ = json.Unmarshal(data, &m)
			s.mu.Lock()
			s.got[m.Seq]++
			if _, ok := s.firstAt[m.Seq]; !ok {
				s.firstAt[m.Seq] = time.Now()
			}
			if m.Seq < s.last {
				s.reordered++
			}
			s.last = max(s.last, m.Seq)
			s.mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
		l.subs = append(l.subs, s)
	}
	for i := 0; i < 4; i++ {
		p := client.New(opts)
		if err := p.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		l.pubs = append(l.pubs, p)
	}
	t.Cleanup(func() {
		for _, s := range l.subs {
			s.c.Close()
		}
		for _, p := range l.pubs {
			p.Close()
		}
	})
	go l.publish(channels, rate)
	return l
}

func (l *goLoad) publish(channels, rate int) {
	defer close(l.done)
	start := time.Now()
	for {
		l.mu.Lock()
		if l.stopping {
			l.mu.Unlock()
			return
		}
		due := int(time.Since(start).Seconds() * float64(rate))
		from := l.sent
		l.sent = max(l.sent, due)
		l.mu.Unlock()
		for seq := from; seq < due; seq++ {
			ch := seq % channels
			name := fmt.Sprint("go-", ch)
			data, _ := json.Marshal(map[string]int{"seq": seq})
			l.pubs[ch%len(l.pubs)].PublishAsync(name, data, func(err error) {
				r := pubRecord{ch: name, at: time.Now()}
				l.mu.Lock()
				if err != nil {
					r.err = err.Error()
					l.failed = append(l.failed, r)
				} else {
					l.acked[seq] = r
				}
				l.mu.Unlock()
			})
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// goReport counts one run as load.mjs does: a message is owed to a
// subscriber when acked while it was subscribed, more than margin from
// either end of that subscription.
type goReport struct {
	Published, Acked, Failed int
	Errors                   map[string]int
	Delivered, Owed, Lost    int
	Duplicated, Reordered    int
	LastTroubleAt            time.Time // the last failed publish, lost message or resubscription
	LostSamples              []string
	Unsubscribed             int // subscribers not subscribed at the end
}

func (l *goLoad) stop(margin time.Duration) goReport {
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
	<-l.done
	time.Sleep(3 * time.Second) // the last acks and deliveries
	l.mu.Lock()
	defer l.mu.Unlock()
	r := goReport{Published: l.sent, Acked: len(l.acked), Failed: len(l.failed), Errors: map[string]int{}}
	for _, f := range l.failed {
		r.Errors[f.err]++
		if f.at.After(r.LastTroubleAt) {
			r.LastTroubleAt = f.at
		}
	}
	byCh := map[string][]int{}
	for seq, a := range l.acked {
		byCh[a.ch] = append(byCh[a.ch], seq)
	}
	for _, s := range l.subs {
		s.mu.Lock()
		for _, n := range s.got {
			r.Delivered += n
			r.Duplicated += n - 1
		}
		r.Reordered += s.reordered
		if n := len(s.intervals); n == 0 || !s.intervals[n-1].end.IsZero() {
			r.Unsubscribed++
		}
		for i, iv := range s.intervals {
			if i > 0 && iv.start.After(r.LastTroubleAt) {
				r.LastTroubleAt = iv.start // back only now
			}
		}
		seqs := byCh[s.ch]
		sort.Ints(seqs)
		for _, seq := range seqs {
			at := l.acked[seq].at
			owed := false
			for _, iv := range s.intervals {
				if at.After(iv.start.Add(margin)) && (iv.end.IsZero() || at.Before(iv.end.Add(-margin))) {
					owed = true
				}
			}
			if !owed {
				continue
			}
			r.Owed++
			if s.got[seq] == 0 {
				r.Lost++
				if at.After(r.LastTroubleAt) {
					r.LastTroubleAt = at
				}
				if len(r.LostSamples) < 5 {
					r.LostSamples = append(r.LostSamples, fmt.Sprintf("%s seq %d acked %s", s.ch, seq, at.Format("15:04:05.000")))
				}
			}
		}
		s.mu.Unlock()
	}
	return r
}
