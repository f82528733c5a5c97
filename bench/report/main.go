// Command report turns the JSON results of bench/compare.sh into
// docs/benchmarks.md (medians with min-max, ratios to each peer, the
// targets and whether they are met, the machine, the command) and a PNG
// chart of the main ratios; with -proxies, bench/proxies.sh's results into
// that file's "Through a proxy" section.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"log"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/scc-k8s/scc/bench"
)

// metric is one number a scenario is judged by.
type metric struct {
	scenario, name string
	lowerBetter    bool
	get            func(*bench.Result) float64
}

var metrics = []metric{
	{"fanout", "delivered msgs/s", false, func(r *bench.Result) float64 { return r.DeliveredPerSec }},
	{"fanout", "delivered per server CPU-second", false, func(r *bench.Result) float64 { return r.DeliveredPerCPUs }},
	{"fanout-rate", "p50 latency ms", true, func(r *bench.Result) float64 { return r.LatencyP50Ms }},
	{"fanout-rate", "p99 latency ms", true, func(r *bench.Result) float64 { return r.LatencyP99Ms }},
	{"channels", "delivered msgs/s", false, func(r *bench.Result) float64 { return r.DeliveredPerSec }},
	{"churn", "subscribe+unsubscribe/s", false, func(r *bench.Result) float64 { return r.OperationsPerSec }},
	{"churn", "per server CPU-second", false, func(r *bench.Result) float64 { return perCPU(r.Operations, r) }},
	{"hot", "publishes/s", false, func(r *bench.Result) float64 { return r.PublishesPerSec }},
	{"hot", "publishes per server CPU-second", false, func(r *bench.Result) float64 { return perCPU(r.Published, r) }},
	{"idle", "KiB per idle connection", true, func(r *bench.Result) float64 { return r.RSSPerConnection / 1024 }},
	{"storm", "connections/s", false, func(r *bench.Result) float64 { return r.OperationsPerSec }},
}

// perCPU is n per second of the server's CPU time: what the server could
// do on its core when the load tool, not the server, was the limit.
func perCPU(n int64, r *bench.Result) float64 {
	if r.ServerCPUSeconds <= 0 {
		return 0
	}
	return float64(n) / r.ServerCPUSeconds
}

// ourVariants are our own other builds and deployments, each reported
// against scc (the standalone worker) rather than listed as a peer.
var ourVariants = []string{"scc-dev", "scc-cluster", "scc-gorilla"}

type stat struct {
	med, min, max float64
	n             int
}

func main() {
	in := flag.String("in", "", "folder of <server>-<run>.json files")
	servers := flag.String("servers", "scc sc20 sc14 centrifugo scc-dev scc-cluster scc-gorilla", "servers, ours first; scc-dev, scc-cluster and scc-gorilla are reported against scc")
	out := flag.String("out", "docs/benchmarks.md", "markdown to write")
	pngOut := flag.String("png", "docs/benchmarks.png", "chart to write")
	command := flag.String("command", "bash bench/compare.sh", "the command that produced the results")
	proxies := flag.Bool("proxies", false, "write only the proxy section (bench/proxies.sh's results) into -out")
	equalRate := flag.Int("equal-rate", 10, "with -proxies: the publish rate of the equal-load runs")
	flag.Parse()
	if *proxies {
		writeProxies(*in, *out, *command, *equalRate)
		return
	}
	names := strings.Fields(*servers)
	// The cluster run and the worker on gorilla/websocket are judged against
	// the single process, not listed as peers.
	variants := slices.DeleteFunc(slices.Clone(names), func(s string) bool { return !slices.Contains(ourVariants, s) })
	names = slices.DeleteFunc(names, func(s string) bool { return slices.Contains(variants, s) })
	all := append(slices.Clone(names), variants...)
	values := map[string]map[string][]float64{} // server -> metric key -> per run
	runs := 0
	for _, s := range all {
		values[s] = map[string][]float64{}
		// <server>-<run>.json, or one file per scenario: <server>-<run>-<scenario>.json
		files, _ := filepath.Glob(filepath.Join(*in, s+"-[0-9]*.json"))
		for _, f := range files {
			run, _, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), s+"-"), ".json"), "-")
			if n, err := strconv.Atoi(run); err == nil {
				runs = max(runs, n)
			}
		}
		for _, f := range files {
			for _, r := range readResults(f) {
				for _, m := range metrics {
					if m.scenario == r.Scenario {
						values[s][key(m)] = append(values[s][key(m)], m.get(r))
					}
				}
			}
		}
	}
	stats := map[string]map[string]stat{}
	for s, byKey := range values {
		stats[s] = map[string]stat{}
		for k, vs := range byKey {
			slices.Sort(vs)
			stats[s][k] = stat{med: median(vs), min: vs[0], max: vs[len(vs)-1], n: len(vs)}
		}
	}
	var b strings.Builder
	writeReport(&b, names, stats, runs, *command, readFloor(*in))
	if kept := keptSection(*out); kept != "" { // bench/proxies.sh's, kept as it is
		b.WriteString("\n" + kept)
	}
	if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := writeChart(*pngOut, names, stats); err != nil {
		log.Fatal(err)
	}
}

// readResults reads one file of `scc bench --json`.
func readResults(f string) []*bench.Result {
	b, err := os.ReadFile(f)
	if err != nil {
		log.Fatal(err)
	}
	var rs []*bench.Result
	if err := json.Unmarshal(b, &rs); err != nil {
		log.Fatalf("%s: %v", f, err)
	}
	return rs
}

func key(m metric) string { return m.scenario + "/" + m.name }

func median(vs []float64) float64 {
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

func num(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// ratio says how many times better ours is (>1 better, for either sense).
func ratio(m metric, ours, peer float64) float64 {
	if ours <= 0 || peer <= 0 {
		return 0
	}
	if m.lowerBetter {
		return peer / ours
	}
	return ours / peer
}

func sh(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "?"
}

// floor is what bench/floor measured in each round: CPU microseconds per
// loopback write by payload size.
type floor map[int]stat

func readFloor(dir string) floor {
	f := floor{}
	for _, size := range []int{100, 2000} {
		files, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("floor-%d-*.json", size)))
		var us []float64
		for _, name := range files {
			b, err := os.ReadFile(name)
			if err != nil {
				continue
			}
			var r struct {
				US float64 `json:"cpu_us_per_write"`
			}
			if json.Unmarshal(b, &r) == nil && r.US > 0 {
				us = append(us, r.US)
			}
		}
		if len(us) > 0 {
			slices.Sort(us)
			f[size] = stat{med: median(us), min: us[0], max: us[len(us)-1], n: len(us)}
		}
	}
	return f
}

func writeReport(b *strings.Builder, names []string, stats map[string]map[string]stat, runs int, command string, fl floor) {
	ours := names[0]
	fmt.Fprintf(b, "# Benchmarks\n\nGenerated by `%s` on %s (%d round(s); each server on a fresh process, the servers alternating in every round).\n\n",
		command, time.Now().UTC().Format("2006-01-02 15:04 MST"), runs)
	fmt.Fprintf(b, "Traffic: one frame per WebSocket message, as the official clients send them (`scc bench` without `--batch`; the same for every server, Centrifugo's adapter included). Batching frames into one message (`--batch`) saves a server read per frame and flatters every server alike; no figure here uses it.\n\nMachine: %s, %d cores, Linux %s, %s, Node.js %s. The server under test is pinned to core 0 (`taskset -c 0`), the load tool (`scc bench`) to core 1; loopback only, 64-byte payloads.\n\n",
		cpuModel(), runtime.NumCPU(), sh("uname", "-r"), runtime.Version(), sh("node", "--version"))
	b.WriteString("Servers: `scc` is `scc worker` (in-process broker); `sc20` and `sc14` are socketcluster-server 20.0.1 and 14.7.2 with no application code (bench/peers); `centrifugo` is Centrifugo v6.9.1, single node, in-memory, anonymous (`client.insecure`).\n\n")
	b.WriteString("Each cell is the median, with min-max, over the rounds. A ratio above 1 means scc is better (higher throughput, lower latency or memory).\n\n")
	b.WriteString("| scenario | metric |")
	for _, s := range names {
		fmt.Fprintf(b, " %s |", s)
	}
	for _, s := range names[1:] {
		fmt.Fprintf(b, " %s vs %s |", ours, s)
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---|", 2*len(names)-1) + "\n")
	for _, m := range metrics {
		fmt.Fprintf(b, "| %s | %s |", m.scenario, m.name)
		for _, s := range names {
			st, ok := stats[s][key(m)]
			if !ok {
				b.WriteString(" n/a |")
				continue
			}
			fmt.Fprintf(b, " %s (%s-%s) |", num(st.med), num(st.min), num(st.max))
		}
		for _, s := range names[1:] {
			if r := ratio(m, stats[ours][key(m)].med, stats[s][key(m)].med); r > 0 {
				fmt.Fprintf(b, " %.2fx |", r)
			} else {
				b.WriteString(" n/a |")
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\n## Targets\n\n| target | measured (scc, median) | met |\n|---|---|---|\n")
	get := func(k string) float64 { return stats[ours][k].med }
	cf := func(k string) float64 { return stats["centrifugo"][k].med }
	target := func(name string, measured string, ok bool) {
		mark := "no: gap stated"
		if ok {
			mark = "yes"
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", name, measured, mark)
	}
	fo := get("fanout/delivered per server CPU-second")
	target("fan-out >= 2,000,000 deliveries per server CPU-second", num(fo), fo >= 2e6)
	p99 := get("fanout-rate/p99 latency ms")
	target("p99 at 40,000 deliveries/s < 8 ms", num(p99)+" ms", p99 > 0 && p99 < 8)
	ch, chc := get("channels/delivered msgs/s"), cf("channels/delivered msgs/s")
	target("2,000 channels >= 2x Centrifugo", fmt.Sprintf("%s msgs/s (%.2fx)", num(ch), ch/math.Max(chc, 1)), chc > 0 && ch >= 2*chc)
	chu := get("churn/subscribe+unsubscribe/s")
	target("churn >= 200,000 channels/s", fmt.Sprintf("%s (%s per server CPU-second)", num(chu), num(get("churn/per server CPU-second"))), chu >= 2e5)
	hot := get("hot/publishes/s")
	target("hot channel >= 200,000 publishes/s", fmt.Sprintf("%s (%s per server CPU-second)", num(hot), num(get("hot/publishes per server CPU-second"))), hot >= 2e5)
	idle := get("idle/KiB per idle connection")
	target("<= 10 KiB per idle connection", num(idle)+" KiB", idle > 0 && idle <= 10)
	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	fmt.Fprintf(b, "| 100,000 concurrent connections on one worker | not measurable on this machine: the hard open-file limit is %d | no: gap stated |\n", lim.Max)
	// The cluster path against the standalone worker, in deliveries per
	// server CPU-second (CPU summed over every process of the cluster).
	for _, v := range []struct {
		name, what string
		within     float64
	}{
		{"scc-dev", "`scc dev` (state, broker and worker in one process)", 0.15},
		{"scc-cluster", "the cluster as processes (state, a broker, two workers; CPU summed)", 0.25},
	} {
		k := "fanout/delivered per server CPU-second"
		name := fmt.Sprintf("%s within %.0f%% of `scc worker` in fan-out deliveries per server CPU-second (%s)", v.what, 100*v.within, num(fo))
		if cl, ok := stats[v.name][k]; ok {
			target(name, fmt.Sprintf("%s (%s-%s), %.0f%% of the single worker", num(cl.med), num(cl.min), num(cl.max), 100*cl.med/math.Max(fo, 1)),
				cl.med >= (1-v.within)*fo)
		} else {
			fmt.Fprintf(b, "| %s | not measured in this run | no: gap stated |\n", name)
		}
	}
	variantSection(b, stats, ours, "The cluster path",
		"`scc-dev` is `scc dev`: state, a broker and a worker in one process over loopback gRPC, every message through the broker. `scc-cluster` is the same as separate processes: state, one broker and two workers, the connections spread over both workers (the server's CPU is summed over the four processes, all on the server core).",
		"scc-dev", "scc-cluster")
	variantSection(b, stats, ours, "Our WebSocket layer against gorilla/websocket",
		"`scc-gorilla` is the same `scc worker` built with `-tags gorillaws`: gorilla/websocket reads and writes every frame (a pooled 16 KiB write buffer, as the worker had before `internal/ws`).",
		"scc-gorilla")
	if f1, f2 := fl[100], fl[2000]; f1.n > 0 && f2.n > 0 {
		fmt.Fprintf(b, "\n### This machine's floor\n\n`bench/floor` writes to 1,000 loopback sockets round-robin from one goroutine with nothing else in the path (server core 0, reader core 1), once per round: %.1f us (%.1f-%.1f) of CPU per 2,000-byte write, %.1f us (%.1f-%.1f) per 100-byte write. ",
			f2.med, f2.min, f2.max, f1.med, f1.min, f1.max)
		fmt.Fprintf(b, "Fan-out keeps 20 publishes in flight, so a subscriber's write carries at most about 20 frames: at the median cost that caps fan-out at %s deliveries per server CPU-second before any work of the server's own. ", num(20/f2.med*1e6))
		fmt.Fprintf(b, "At 40 msgs/s to 1,000 subscribers each publish is 1,000 separate writes, %.1f ms of one core back to back, so the last subscribers are served that late whatever the server does: the p99 floor. ", f1.med)
		b.WriteString("The spread between rounds is this machine's own drift; the servers alternate within each round so that it falls on all of them alike.\n")
	}
	b.WriteString("\nThe load tool runs on one core; where it saturates that core first (fan-out to 1,000 sockets, the hot channel's 10 subscribers, churn), the numbers are the tool's ceiling as much as the server's: the server's CPU-seconds in the JSON results tell how busy it was.\n\n![ratios](benchmarks.png)\n")
}

// variantSection writes a table of our variants against scc, metric by
// metric, where they were measured.
func variantSection(b *strings.Builder, stats map[string]map[string]stat, ours, title, desc string, variants ...string) {
	var present []string
	for _, v := range variants {
		if len(stats[v]) > 0 {
			present = append(present, v)
		}
	}
	if len(present) == 0 {
		return
	}
	fmt.Fprintf(b, "\n## %s\n\n%s Same rounds, same machine, alternating with the others. A ratio above 1 means `scc` (the standalone worker) is better.\n\n| scenario | metric | scc |", title, desc)
	for _, v := range present {
		fmt.Fprintf(b, " %s |", v)
	}
	for _, v := range present {
		fmt.Fprintf(b, " scc vs %s |", v)
	}
	b.WriteString("\n|---|---|---|" + strings.Repeat("---|", 2*len(present)) + "\n")
	for _, m := range metrics {
		k := key(m)
		row, measured := "", false
		o := stats[ours][k]
		row = fmt.Sprintf("| %s | %s | %s (%s-%s) |", m.scenario, m.name, num(o.med), num(o.min), num(o.max))
		for _, v := range present {
			if vs, ok := stats[v][k]; ok {
				row += fmt.Sprintf(" %s (%s-%s) |", num(vs.med), num(vs.min), num(vs.max))
				measured = true
			} else {
				row += " - |"
			}
		}
		for _, v := range present {
			if vs, ok := stats[v][k]; ok {
				row += fmt.Sprintf(" %.2fx |", ratio(m, o.med, vs.med))
			} else {
				row += " - |"
			}
		}
		if measured {
			b.WriteString(row + "\n")
		}
	}
}

// writeChart draws, per metric, one bar per peer: scc's ratio to it
// (log scale; the line marks 1x).
func writeChart(path string, names []string, stats map[string]map[string]stat) error {
	const w, rowH, left, right = 1000, 22, 330, 150
	peers := names[1:]
	h := 60 + len(metrics)*(len(peers)*rowH+10)
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	colors := []color.RGBA{{59, 99, 209, 255}, {46, 158, 91, 255}, {181, 138, 27, 255}, {181, 59, 46, 255}}
	text := func(x, y int, s string) {
		d := &font.Drawer{Dst: img, Src: image.NewUniform(color.Black), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	text(10, 20, "scc vs peers: how many times better (log scale, line = 1x)")
	scale := func(r float64) int { // 1/10x .. 30x over the bar area
		r = math.Max(0.1, math.Min(30, r))
		return left + int((math.Log10(r)+1)/(math.Log10(30)+1)*float64(w-left-right))
	}
	one := scale(1)
	y := 40
	for _, m := range metrics {
		text(10, y+14, m.scenario+": "+m.name)
		for i, p := range peers {
			r := ratio(m, stats[names[0]][key(m)].med, stats[p][key(m)].med)
			x := scale(r)
			x0, x1 := min(one, x), max(one, x)
			if r > 0 {
				draw.Draw(img, image.Rect(x0, y+3, max(x1, x0+1), y+rowH-3), image.NewUniform(colors[i%len(colors)]), image.Point{}, draw.Src)
				label := fmt.Sprintf("%.2fx vs %s", r, p)
				text(min(x1+4, w-7*len(label)-4), y+15, label)
			} else {
				text(one+4, y+15, "n/a vs "+p)
			}
			y += rowH
		}
		y += 10
	}
	draw.Draw(img, image.Rect(one, 30, one+1, h-5), image.NewUniform(color.Black), image.Point{}, draw.Src)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return png.Encode(f, img)
}
