// Package soak runs the cluster (state, 2 brokers, 2 workers, a gateway,
// as processes) under churn: clients that connect, subscribe to channels
// never used before, publish, leave and come again, beside long-lived
// subscribers that must receive everything. Every component's heap in
// use, goroutines and open files are sampled every 2 s and must end flat
// (within the tolerances below of where they stood early in the run).
//
// scripts/test.sh runs 60 s; `bash scripts/soak.sh` runs 10 minutes and
// plots the samples into docs/soak.svg.
package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/pkg/client"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}

// series are the samples of one component.
type series struct {
	name                  string
	url                   string // its /metrics
	at                    []float64
	heapMiB, gor, openFDs []float64
}

// The tolerances: a resource ends flat when the mean of the last fifth of
// the samples is within these of the mean over 20-40% of the run (after
// the warm-up).
const (
	heapSlack   = 1.5 // times, plus 8 MiB
	heapPlusMiB = 8
	countSlack  = 1.2 // goroutines and files: times, plus 50
	countPlus   = 50
)

func TestSoak(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("a soak: scripts/test.sh runs it without -race")
	}
	d := time.Minute
	if v := os.Getenv("SCC_SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	bin := testutil.SccBinary(t)
	env := []string{"SCC_CLUSTER_TOKEN=soak-token", "SCC_LOG_LEVEL=warn"}
	port := func() string { return strconv.Itoa(testutil.FreePort(t)) }
	state, stateHTTP := "127.0.0.1:"+port(), "127.0.0.1:"+port()
	var comps []*series
	testutil.StartProc(t, bin, "state", env, "state", "--listen", state, "--http-listen", stateHTTP, "--settle-window", "0")
	comps = append(comps, &series{name: "state", url: "http://" + stateHTTP + "/metrics"})
	for i := 1; i <= 2; i++ {
		h := "127.0.0.1:" + port()
		testutil.StartProc(t, bin, fmt.Sprint("broker-", i), env, "broker", "--listen", "127.0.0.1:"+port(), "--http-listen", h, "--state", state)
		comps = append(comps, &series{name: fmt.Sprint("broker-", i), url: "http://" + h + "/metrics"})
	}
	for i := 1; i <= 2; i++ {
		a := "127.0.0.1:" + port()
		testutil.StartProc(t, bin, fmt.Sprint("worker-", i), env, "worker", "--listen", a, "--state", state, "--auth-key", "k",
			"--trusted-proxies", "127.0.0.1")
		testutil.WaitHTTP(t, "http://"+a+"/readyz")
		comps = append(comps, &series{name: fmt.Sprint("worker-", i), url: "http://" + a + "/metrics"})
	}
	gw := "127.0.0.1:" + port()
	testutil.StartProc(t, bin, "gateway", env, "gateway", "--listen", gw, "--state", state, "--drain-delay", "0")
	testutil.WaitHTTP(t, "http://"+gw+"/readyz")
	comps = append(comps, &series{name: "gateway", url: "http://" + gw + "/metrics"})
	url := "ws://" + gw + "/socketcluster/"

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup

	// Long-lived subscribers on 100 channels, and a publisher: every
	// acked message must reach every one of them.
	const steady, channels = 200, 100
	got := make([]map[int]bool, steady)
	var gotMu sync.Mutex
	for i := range steady {
		got[i] = map[int]bool{}
		c, err := client.Dial(ctx, client.Options{URL: url, NoReconnect: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Subscribe(ctx, fmt.Sprint("steady-", i%channels), func(_ string, data json.RawMessage) {
			var m struct{ Seq int }
			_ = json.Unmarshal(data, &m)
			gotMu.Lock()
			got[i][m.Seq] = true
			gotMu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := client.Dial(ctx, client.Options{URL: url, NoReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var ackMu sync.Mutex
	acked := map[int]int{} // seq -> channel
	var pubFailed atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for seq := 0; ctx.Err() == nil; seq++ {
			ch := seq % channels
			data, _ := json.Marshal(map[string]int{"seq": seq})
			pub.PublishAsync(fmt.Sprint("steady-", ch), data, func(err error) {
				if err != nil {
					pubFailed.Add(1)
					return
				}
				ackMu.Lock()
				acked[seq] = ch
				ackMu.Unlock()
			})
			time.Sleep(5 * time.Millisecond) // 200/s
		}
	}()

	// Churn: 20 loops of connect, subscribe to 20 channels never used
	// before, publish to them, leave half, disconnect (half of the time by
	// closing the socket without a word).
	var cycles, fresh atomic.Int64
	for w := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for ctx.Err() == nil {
				c, err := client.Dial(ctx, client.Options{URL: url, NoReconnect: true})
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				for k := range 20 {
					n := fresh.Add(1)
					name := fmt.Sprint("churn-", n)
					if c.Subscribe(ctx, name, func(string, json.RawMessage) {}) == nil {
						_ = c.Publish(ctx, name, "x")
						if k%2 == 0 {
							_ = c.Unsubscribe(name)
						}
					}
				}
				if r.IntN(2) == 0 {
					c.Disconnect(1000, "")
				}
				c.Close()
				cycles.Add(1)
				time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
			}
		}()
	}

	start := time.Now()
	for time.Since(start) < d {
		at := time.Since(start).Seconds()
		for _, s := range comps {
			m := testutil.MustScrape(t, s.url, "go_memstats_heap_inuse_bytes", "go_goroutines", "process_open_fds")
			s.at = append(s.at, at)
			s.heapMiB = append(s.heapMiB, m["go_memstats_heap_inuse_bytes"]/(1<<20))
			s.gor = append(s.gor, m["go_goroutines"])
			s.openFDs = append(s.openFDs, m["process_open_fds"])
		}
		time.Sleep(2 * time.Second)
	}
	cancel()
	wg.Wait()
	time.Sleep(2 * time.Second) // the last deliveries

	ackMu.Lock()
	gotMu.Lock()
	lost := 0
	for seq, ch := range acked {
		for i := ch; i < steady; i += channels {
			if !got[i][seq] {
				lost++
			}
		}
	}
	t.Logf("soak: %v, %d churn cycles (connect, 20 new channels, publish, leave), %d channels used once; steady subscribers: %d publishes acked, %d failed, %d deliveries lost",
		d, cycles.Load(), fresh.Load(), len(acked), pubFailed.Load(), lost)
	gotMu.Unlock()
	ackMu.Unlock()
	if lost > 0 {
		t.Errorf("%d acknowledged messages lost to steady subscribers", lost)
	}

	for _, s := range comps {
		check := func(what string, v []float64, slack, plus float64) {
			early, late := mean(window(v, 0.2, 0.4)), mean(window(v, 0.8, 1))
			t.Logf("soak: %-9s %-10s early %8.1f  end %8.1f", s.name, what, early, late)
			if late > early*slack+plus {
				t.Errorf("%s: %s grew from %.1f to %.1f (tolerance: x%.1f + %.0f)", s.name, what, early, late, slack, plus)
			}
		}
		check("heap MiB", s.heapMiB, heapSlack, heapPlusMiB)
		check("goroutines", s.gor, countSlack, countPlus)
		check("open files", s.openFDs, countSlack, countPlus)
	}
	if p := os.Getenv("SCC_SOAK_SVG"); p != "" {
		if err := os.WriteFile(p, plot(comps, d), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func window(v []float64, from, to float64) []float64 {
	i, j := int(float64(len(v))*from), int(float64(len(v))*to)
	if j <= i {
		j = min(i+1, len(v))
	}
	return v[i:j]
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}
