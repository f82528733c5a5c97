package edge_test

// Many connections on one machine: a cluster of worker processes holding
// SCC_CONNECTIONS subscribed clients (12,000 by default; 100,000 with
// scripts/connections.sh), their memory, the CPU their pings cost, and a
// low-rate fan-out that every one of them must receive in full.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/pkg/client"
)

// workerSample is what the test reads of every worker at one moment.
type workerSample struct{ conns, rss, heap, cpu float64 }

// sampleWorkers reads every worker's metrics (testutil.MustScrape: a
// worker too busy to answer at once is asked again, and one that never
// answers fails the test rather than counting as zero).
func sampleWorkers(t *testing.T, bases []string) workerSample {
	const conns, rss, heap, cpu = "scc_worker_connections", "process_resident_memory_bytes", "go_memstats_heap_inuse_bytes", "process_cpu_seconds_total"
	var s workerSample
	for _, b := range bases {
		m := testutil.MustScrape(t, b+"/metrics", conns, rss, heap, cpu)
		s.conns += m[conns]
		s.rss += m[rss]
		s.heap += m[heap]
		s.cpu += m[cpu]
	}
	return s
}

// machineBusy reads /proc/stat: CPU time spent busy and in all, in ticks.
func machineBusy(t *testing.T) (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// busySince is the share of the machine's CPU time busy since a reading.
func busySince(t *testing.T, busy0, total0 float64) float64 {
	busy, total := machineBusy(t)
	return 100 * (busy - busy0) / max(total-total0, 1)
}

func TestManyConnections(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("thousands of connections: scripts/test.sh runs this without -race")
	}
	n := 12_000
	if v := os.Getenv("SCC_CONNECTIONS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	// A process may open 20,000 files here: each worker and each holder
	// takes at most 15,000 sockets (and a worker its cluster links).
	const perProcess, channels, deliveries = 15_000, 1_000, 5_000
	const pingInterval = 8 * time.Second // the worker's default
	procs := max(3, (n+perProcess-1)/perProcess)
	// 5,000 deliveries a second in all, each channel published at least
	// twice.
	rate := max(1, deliveries*channels/n)
	quiet, fanout := pingInterval, max(12*time.Second, time.Duration(2*channels/rate+1)*time.Second)
	if n > 20_000 {
		quiet = 3 * pingInterval
	}

	bases := startCluster(t, 2, procs)
	var urls []string
	for _, b := range bases {
		urls = append(urls, wsURL(b))
	}
	// The workers' own cost with no client, to subtract from the pings'.
	before := sampleWorkers(t, bases)
	time.Sleep(4 * time.Second)
	idle := sampleWorkers(t, bases)
	idleRate := (idle.cpu - before.cpu) / 4

	// Holders, each from its own loopback address, spread their clients
	// over every worker; client g subscribes to channel g%1000.
	start := time.Now()
	per := (n + procs - 1) / procs
	var holders []*holder
	for h := 0; h*per < n; h++ {
		holders = append(holders, startHolder(t, holdSpec{urls: urls, first: h * per, n: min(per, n-h*per),
			channels: channels, prefix: "many-", source: fmt.Sprint("127.0.0.", 10+h)}))
	}
	progress := make(chan struct{})
	go func() {
		for {
			select {
			case <-progress:
				return
			case <-time.After(5 * time.Second):
				conns := 0.0 // a progress line: a worker too busy to answer counts 0
				for _, b := range bases {
					conns += testutil.Scrape(b + "/metrics")["scc_worker_connections"]
				}
				t.Logf("connections: %.0f of %d connected after %v", conns, n, time.Since(start).Round(time.Second))
			}
		}
	}()
	for _, h := range holders {
		h.ready(t)
	}
	close(progress)
	connected := time.Since(start)
	time.Sleep(2 * time.Second)
	held := sampleWorkers(t, bases)
	if int(held.conns) != n {
		t.Fatalf("the workers hold %.0f connections, want %d", held.conns, n)
	}
	rssPer := (held.rss - before.rss) / float64(n)
	heapPer := (held.heap - before.heap) / float64(n)
	t.Logf("connections: %d subscribed over %d workers (%d holder processes) in %v; worker memory %.1f KiB RSS, %.1f KiB heap per connection",
		n, len(bases), len(holders), connected.Round(100*time.Millisecond), rssPer/1024, heapPer/1024)

	// Quiet: nothing but the workers' pings and their answers.
	b0, t0 := machineBusy(t)
	time.Sleep(quiet)
	quietBusy := busySince(t, b0, t0)
	quietEnd := sampleWorkers(t, bases)
	pingCPU := quietEnd.cpu - held.cpu - idleRate*quiet.Seconds()
	pings := float64(n) * quiet.Seconds() / pingInterval.Seconds()
	t.Logf("connections: quiet %v: the workers used %.2f CPU-s (%.1f%% of a core) for %.0f pings, %.1f us each, beyond their %.1f%% with no client; the machine was %.0f%% busy",
		quiet, pingCPU, 100*pingCPU/quiet.Seconds(), pings, pingCPU/pings*1e6, 100*idleRate, quietBusy)
	for _, h := range holders {
		h.report(t) // start the fan-out's count from zero
	}

	// Fan-out: 200 publishes a second round the channels; each is owed
	// to every subscriber of its channel.
	ctx, cancel := context.WithTimeout(context.Background(), fanout+time.Minute)
	defer cancel()
	pub, err := client.Dial(ctx, client.Options{URL: urls[0], NoReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	subs := make([]int, channels)
	for g := 0; g < n; g++ {
		subs[g%channels]++
	}
	var mu sync.Mutex
	var acked, owed int
	failed := map[string]int{}
	var wg sync.WaitGroup
	fanStart := time.Now()
	b0, t0 = machineBusy(t)
	for sent := 0; ; {
		el := time.Since(fanStart)
		if el >= fanout {
			break
		}
		for due := int(el.Seconds() * float64(rate)); sent < due; sent++ {
			ch := sent % channels
			wg.Add(1)
			data := json.RawMessage(strconv.AppendInt(nil, time.Now().UnixNano(), 10))
			pub.PublishAsync("many-"+strconv.Itoa(ch), data, func(err error) {
				mu.Lock()
				if err != nil {
					failed[err.Error()]++
				} else {
					acked++
					owed += subs[ch]
				}
				mu.Unlock()
				wg.Done()
			})
		}
		time.Sleep(time.Millisecond)
	}
	fanBusy := busySince(t, b0, t0)
	wg.Wait()
	time.Sleep(2 * time.Second) // the last deliveries
	var received, dropped int64
	var silent int
	var lat []int64
	for _, h := range holders {
		r := h.report(t)
		received += r.Received
		dropped += r.Dropped
		silent += r.Silent
		lat = append(lat, r.LatencyUS...)
	}
	slices.Sort(lat)
	q := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / 1000
	}
	t.Logf("connections: fan-out %v at %d publishes/s: %d acked, %d failed %v; %d owed, %d received, %d clients received nothing, %d connections dropped; latency p50 %.1f ms, p99 %.1f ms, max %.1f ms; the machine was %.0f%% busy",
		fanout, rate, acked, len(failed), failed, owed, received, silent, dropped, q(0.5), q(0.99), q(1), fanBusy)
	if len(failed) > 0 || int64(owed) != received || silent > 0 || dropped > 0 {
		t.Errorf("want every publish acked and every subscriber to receive all it was owed, on connections that stayed")
	}
	if path := os.Getenv("SCC_CONNECTIONS_DOC"); path != "" && !t.Failed() {
		var b strings.Builder
		b.WriteString("| connections | processes | connected and subscribed in | worker memory per connection | pings (quiet) | fan-out | delivered | latency p50 / p99 / max |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|\n")
		fmt.Fprintf(&b, "| %d on %d workers | state, 2 brokers, %d workers, %d client processes from %d loopback addresses | %.1f s | %.1f KiB RSS, %.1f KiB heap | %.0f in %v: %.2f CPU-s, %.1f%% of a core, %.1f us each | %d publishes/s to %d channels for %v: %d acked, %d failed | %d of %d owed, to all %d clients, none dropped | %.1f / %.1f / %.1f ms |\n",
			n, len(bases), len(bases), len(holders), len(holders), connected.Seconds(), rssPer/1024, heapPer/1024,
			pings, quiet, pingCPU, 100*pingCPU/quiet.Seconds(), pingCPU/pings*1e6,
			rate, channels, fanout, acked, len(failed), received, owed, n, q(0.5), q(0.99), q(1))
		testutil.WriteSection(t, path, "connections", "scripts/connections.sh", b.String())
	}
}
