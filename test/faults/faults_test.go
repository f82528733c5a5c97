// Package faults is the fault suite: the cluster as processes on loopback
// (state, 3 brokers, 3 workers, 2 gateways) under steady pub/sub load from
// the official JS client and the Go client, and one fault at a time:
// SIGKILL and restart of a broker, of state, of a worker, of a gateway and
// of both;
// a broker paused (SIGSTOP, then SIGCONT); the path from one worker to one
// broker cut silently and restored, and slowed. Each fault gets a fresh
// cluster and a row of counts: published, acked, failed (with the errors
// the publishers got), delivered, lost, duplicated, reordered, time to
// detect and to recover.
//
// scripts/test.sh runs the short version; `bash scripts/faults.sh` the
// long one, which writes its table into docs/reliability.md. The network
// faults need root (iptables singles out the worker by its user id).
package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}

// long: the durations of the long version (SCC_FAULTS_LONG=1).
var long = os.Getenv("SCC_FAULTS_LONG") != ""

func dur(short, lng time.Duration) time.Duration {
	if long {
		return lng
	}
	return short
}

// times is what a fault reports about itself.
type times struct {
	injected, detected, restored time.Time
	what                         string // how it was done, for the table
}

type fault struct {
	name, detectBy string
	singleOut      bool // worker-1 runs as workerUID, its path to broker-1 through a proxy
	run            func(t *testing.T, c *cluster, px *faultProxy) times
	// lossless: no acknowledged message may be lost to a subscribed
	// client, nor arrive out of order. (Where a broker stops answering,
	// publishes held for it are sent once the ring has moved on, after
	// later ones: the table counts them.)
	lossless bool
	// outage: nothing in the cluster can serve until the fault ends (no
	// gateway is up), so its trouble counts from then, not from the
	// detection.
	outage bool
}

var faults = []fault{
	{name: "broker SIGKILL, restarted", detectBy: "state drops it from the ring", run: func(t *testing.T, c *cluster, _ *faultProxy) times {
		tm := times{injected: time.Now(), what: "kill -9 broker-2, start it again once the ring has changed"}
		c.brokers[1].kill()
		tm.detected = until(20*time.Second, func() bool { v, err := c.view(); return err == nil && len(v.Brokers) == 2 })
		c.brokers[1].start()
		tm.restored = time.Now()
		return tm
	}},
	{name: "state SIGKILL, restarted", detectBy: "members rejoin the new state", lossless: true, run: func(t *testing.T, c *cluster, _ *faultProxy) times {
		tm := times{injected: time.Now(), what: "kill -9 state, start it again after 2 s"}
		c.state.kill()
		time.Sleep(2 * time.Second)
		c.state.start()
		tm.restored = time.Now()
		tm.detected = until(20*time.Second, func() bool {
			v, err := c.view()
			return err == nil && len(v.Brokers) == 3 && v.readyWorkers() == 3
		})
		return tm
	}},
	{name: "worker SIGKILL, restarted", detectBy: "the gateway stops routing to it", lossless: true, run: func(t *testing.T, c *cluster, _ *faultProxy) times {
		tm := times{injected: time.Now(), what: "kill -9 worker-2, start it again once the gateways have dropped it"}
		c.workers[1].kill()
		tm.detected = until(20*time.Second, func() bool { return c.gatewaysRoute(2) })
		c.workers[1].start()
		tm.restored = time.Now()
		return tm
	}},
	{name: "gateway SIGKILL, restarted", detectBy: "clients see the connection drop", lossless: true, run: func(t *testing.T, c *cluster, _ *faultProxy) times {
		tm := times{injected: time.Now(), what: "kill -9 gateway-1 of 2, start it again after 1 s"}
		c.gateways[0].kill()
		tm.detected = time.Now() // the kernel resets every connection at once
		time.Sleep(time.Second)
		c.gateways[0].start()
		tm.restored = time.Now()
		return tm
	}},
	{name: "every gateway SIGKILL, restarted", detectBy: "clients see the connection drop", lossless: true, outage: true, run: func(t *testing.T, c *cluster, _ *faultProxy) times {
		tm := times{injected: time.Now()}
		for _, g := range c.gateways {
			g.kill()
		}
		tm.detected = time.Now()
		time.Sleep(time.Second)
		for _, g := range c.gateways {
			g.start()
		}
		tm.restored = time.Now()
		routing := until(10*time.Second, func() bool { return c.gatewaysRoute(3) })
		if routing.IsZero() {
			t.Fatal("the restarted gateways did not route to every worker within 10 s")
		}
		tm.what = fmt.Sprintf("kill -9 both gateways, start them again after 1 s (routing to every worker %d ms later): clients wait out their retry delays",
			routing.Sub(tm.restored).Milliseconds())
		return tm
	}},
	{name: "broker paused (SIGSTOP)", detectBy: "state drops it from the ring (lease)", run: func(t *testing.T, c *cluster, _ *faultProxy) times {
		d := dur(8*time.Second, 30*time.Second)
		tm := times{injected: time.Now(), what: fmt.Sprintf("kill -STOP broker-2 for %v, then -CONT", d)}
		c.brokers[1].signal(syscall.SIGSTOP)
		tm.detected = until(d, func() bool { v, err := c.view(); return err == nil && len(v.Brokers) == 2 })
		time.Sleep(time.Until(tm.injected.Add(d)))
		c.brokers[1].signal(syscall.SIGCONT)
		tm.restored = time.Now()
		// Every worker lost the broker at once: none may take that for a
		// cut of its own and hand its clients over (partition.go).
		for i, port := range c.workerPorts {
			const handovers = "scc_worker_partition_handovers_total"
			if n := testutil.MustScrape(t, "http://127.0.0.1:"+port+"/metrics", handovers)[handovers]; n != 0 {
				t.Errorf("worker-%d handed its clients over (scc_worker_partition_handovers_total %v): a stopped broker taken for a cut", i+1, n)
			}
		}
		return tm
	}},
	{name: "worker-1 to broker-1 cut silently, restored", detectBy: "worker-1 reports itself unready", singleOut: true, lossless: true, run: func(t *testing.T, c *cluster, px *faultProxy) times {
		d := dur(25*time.Second, 40*time.Second)
		tm := times{injected: time.Now(), what: fmt.Sprintf("nothing moves either way (connections stay open) until 200 ms after worker-1 notices (at most %v)", d)}
		px.set(true, 0)
		tm.detected = until(d, func() bool { v, err := c.view(); return err == nil && !v.workerReady("worker-1") })
		if !tm.detected.IsZero() {
			// Restored before worker-1 would hand its clients over
			// (PartitionAfter, 600 ms after its link went down).
			time.Sleep(200 * time.Millisecond)
		}
		px.set(false, 0)
		tm.restored = time.Now()
		return tm
	}},
	{name: "worker-1 to broker-1 cut for long", detectBy: "worker-1 reports itself unready", singleOut: true, run: func(t *testing.T, c *cluster, px *faultProxy) times {
		d := dur(15*time.Second, 30*time.Second)
		tm := times{injected: time.Now(), what: fmt.Sprintf("cut silently for %v: worker-1 hands its clients to the others 0.6 s after it notices", d)}
		px.set(true, 0)
		tm.detected = until(d, func() bool { v, err := c.view(); return err == nil && !v.workerReady("worker-1") })
		time.Sleep(time.Until(tm.injected.Add(d)))
		if n := testutil.Scrape("http://127.0.0.1:" + c.workerPorts[0] + "/metrics")["scc_worker_partition_handovers_total"]; n < 1 {
			t.Errorf("worker-1 did not hand its clients over (scc_worker_partition_handovers_total %v)", n)
		}
		px.set(false, 0)
		tm.restored = time.Now()
		return tm
	}},
	{name: "worker-1 to broker-1 slowed", detectBy: "", singleOut: true, lossless: true, run: func(t *testing.T, c *cluster, px *faultProxy) times {
		d := dur(6*time.Second, 20*time.Second)
		tm := times{injected: time.Now(), what: fmt.Sprintf("every chunk either way held 200 ms for %v", d)}
		px.set(false, 200*time.Millisecond)
		time.Sleep(d)
		px.set(false, 0)
		tm.restored = time.Now()
		return tm
	}},
}

// row is one fault's line in docs/reliability.md.
type row struct {
	fault, what, detectBy      string
	published, acked, failed   int
	errors                     map[string]int
	delivered, lost, dup, reor int
	detectMs, recoverMs        int    // -1: not measured
	recoverFrom                string // what recoverMs counts from, where not the detection
	jsNotBack, goUnsubscribed  int
	jsBackMs                   int // -1: no JS client had to reconnect
}

func TestFaults(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("the fault suite runs processes under load: scripts/test.sh runs it without -race")
	}
	var rows []row
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			if f.singleOut && os.Geteuid() != 0 {
				t.Skip("needs root: iptables singles out worker-1 by its user id")
			}
			rows = append(rows, runFault(t, f))
		})
	}
	writeDoc(t, rows)
}

func runFault(t *testing.T, f fault) row {
	if f.singleOut {
		// worker-1 must be able to run the binary as another user.
		_ = os.Chmod(filepath.Dir(testutil.SccBinary(t)), 0o755)
	}
	c := startCluster(t, f.singleOut)
	var px *faultProxy
	if f.singleOut {
		px = startProxy(t, c.brokerAddrs[0])
		port, _ := strconv.Atoi(c.brokerAddrs[0][strings.LastIndex(c.brokerAddrs[0], ":")+1:])
		redirect(t, workerUID, port, px.port())
		// worker-1 dialled broker-1 before the redirect: restart it so its
		// link goes through the proxy.
		c.workers[0].kill()
		c.workers[0].start()
		testutil.Eventually(t, 20*time.Second, func() bool { v, err := c.view(); return err == nil && v.readyWorkers() == 3 },
			"worker-1 back through the proxy")
	}
	gw := "ws://127.0.0.1:" + c.gwPort + "/socketcluster/"
	gwPort, _ := strconv.Atoi(c.gwPort)
	gl := startGoLoad(t, gw, 150, 30, 150)                                        // and 4 publishers
	js := testutil.StartJSLoad(t, repoRoot(t), "127.0.0.1", gwPort, 150, 30, 150) // and 4 publishers
	time.Sleep(2 * time.Second)

	tm := f.run(t, c, px)
	// Settled: the ring whole, every worker ready, the gateway routing to
	// all, then a little more load.
	testutil.Eventually(t, 60*time.Second, func() bool {
		v, err := c.view()
		return err == nil && len(v.Brokers) == 3 && v.readyWorkers() == 3 && v.Phase == "PHASE_STABLE" && c.gatewaysRoute(3)
	}, "the cluster whole again")
	// Every client back through the gateways (both kinds back off for up
	// to 2 s between their attempts), then a little more load.
	const clients = 150 + 4 + 150 + 4
	testutil.Eventually(t, 30*time.Second, func() bool {
		return c.gatewayConns() >= clients
	}, "all %d clients connected through the gateways again", clients)
	time.Sleep(3 * time.Second)
	jr := js.Stop(t, tm.injected)
	margin := time.Duration(jr.MarginMs) * time.Millisecond
	gr := gl.stop(margin)

	r := row{fault: f.name, what: tm.what, detectBy: f.detectBy, errors: gr.Errors,
		published: gr.Published + jr.Published, acked: gr.Acked + jr.Acked, failed: gr.Failed + jr.Failed,
		delivered: gr.Delivered + jr.Delivered, lost: gr.Lost + jr.Lost, dup: gr.Duplicated + jr.Duplicates,
		reor: gr.Reordered, detectMs: -1, recoverMs: -1, jsNotBack: jr.NotBack, goUnsubscribed: gr.Unsubscribed, jsBackMs: -1}
	if jr.Reconnected > 0 {
		r.jsBackMs = jr.BackWithinMs
	}
	if !tm.detected.IsZero() && f.detectBy != "" {
		r.detectMs = int(tm.detected.Sub(tm.injected) / time.Millisecond)
	}
	// From the detection; for a fault nothing detects (a slow link), or
	// one that leaves nothing to serve until it ends, from its end.
	from, fromWhat := tm.detected, "the detection"
	if from.IsZero() || f.detectBy == "" || f.outage {
		from, fromWhat = tm.restored, "its end"
		if f.outage {
			r.recoverFrom, fromWhat = "from the restart", "the restart"
		}
	}
	if !from.IsZero() {
		r.recoverMs = max(0, int(gr.LastTroubleAt.Sub(from)/time.Millisecond))
	}
	t.Logf("%s (%s): published %d, acked %d, failed %d %v; delivered %d, lost %d (Go %d %v, JS %d), duplicated %d, reordered %d; detected in %d ms (%s), trouble until %d ms after %s",
		f.name, tm.what, r.published, r.acked, r.failed, gr.Errors, r.delivered, r.lost, gr.Lost, gr.LostSamples, jr.Lost,
		r.dup, r.reor, r.detectMs, f.detectBy, r.recoverMs, fromWhat)
	t.Logf("JS clients: %v", jr)

	if r.dup != 0 {
		t.Errorf("%d duplicated: want none", r.dup)
	}
	if f.lossless && (r.lost != 0 || r.reor != 0) {
		t.Errorf("%d acknowledged messages lost to subscribed clients, %d reordered: want none", r.lost, r.reor)
	}
	if r.jsNotBack != 0 || r.goUnsubscribed != 0 {
		t.Errorf("clients not back: %d JS, %d Go", r.jsNotBack, r.goUnsubscribed)
	}
	if f.detectBy != "" && tm.detected.IsZero() {
		t.Errorf("not detected (%s)", f.detectBy)
	}
	return r
}

func repoRoot(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(filepath.Dir(wd))
}

// writeDoc puts the table into the file SCC_FAULTS_DOC names, between
// its markers.
func writeDoc(t *testing.T, rows []row) {
	path := os.Getenv("SCC_FAULTS_DOC")
	if path == "" || len(rows) == 0 {
		return
	}
	var b strings.Builder
	b.WriteString("| fault | how | published | acked | failed (errors) | delivered | lost | duplicated | reordered | detected | trouble after detection | JS clients all back (from the fault) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	ms := func(v int, by string) string {
		if v < 0 {
			return "—"
		}
		if by != "" {
			return fmt.Sprintf("%d ms (%s)", v, by)
		}
		return fmt.Sprintf("%d ms", v)
	}
	for _, r := range rows {
		var errs []string
		for e, n := range r.errors {
			errs = append(errs, fmt.Sprintf("%d %q", n, e))
		}
		sort.Strings(errs)
		fe := strconv.Itoa(r.failed)
		if len(errs) > 0 {
			fe += " (Go: " + strings.Join(errs, ", ") + ")"
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %s | %d | %d | %d | %d | %s | %s | %s |\n", r.fault, r.what, r.published, r.acked, fe,
			r.delivered, r.lost, r.dup, r.reor, ms(r.detectMs, r.detectBy), ms(r.recoverMs, r.recoverFrom), ms(r.jsBackMs, ""))
	}
	testutil.WriteSection(t, path, "faults", "scripts/faults.sh", b.String())
}
