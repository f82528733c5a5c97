package main

// The "Through a proxy" section of docs/benchmarks.md, from the results
// of bench/proxies.sh: the same worker loaded directly and through each
// proxy. bench/compare.sh rewrites the rest of the file and keeps this
// section as it is.

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

const (
	proxiesBegin = "<!-- proxies: written by bench/proxies.sh -->"
	proxiesEnd   = "<!-- /proxies -->"
)

var proxyPaths = []struct{ name, label string }{
	{"direct", "direct to the worker"},
	{"gateway", "our gateway"},
	{"gateway-sockets", "our gateway, a socket per client (`--tunnels=false`)"},
	{"nginx", "nginx"},
	{"haproxy", "HAProxy"},
}

type proxyStats struct {
	delivered, maxServerPerM, maxProxyPerM, serverPerM, proxyPerM, p50, p99 stat
	jsServerPerM, jsProxyPerM                                               stat // the official JS client as the load
}

func writeProxies(in, out, command string, equalRate int) {
	stats := map[string]*proxyStats{}
	runs := 0
	for _, p := range proxyPaths {
		var delivered, maxServerPerM, maxProxyPerM, serverPerM, proxyPerM, p50, p99, jsServer, jsProxy []float64
		files, _ := filepath.Glob(filepath.Join(in, p.name+"-[0-9]*-*.json"))
		for _, f := range files {
			equal := strings.HasSuffix(f, "-equal.json") // the same fixed load on every path
			for _, r := range readResults(f) {
				if r.Delivered <= 0 {
					continue
				}
				perM := func(cpu float64) float64 { return cpu / float64(r.Delivered) * 1e6 }
				switch {
				case equal:
					serverPerM = append(serverPerM, perM(r.ServerCPUSeconds))
					proxyPerM = append(proxyPerM, perM(r.ProxyCPUSeconds))
				case r.Scenario == "fanout":
					delivered = append(delivered, r.DeliveredPerSec)
					maxServerPerM = append(maxServerPerM, perM(r.ServerCPUSeconds))
					maxProxyPerM = append(maxProxyPerM, perM(r.ProxyCPUSeconds))
				case r.Scenario == "fanout-rate":
					p50 = append(p50, r.LatencyP50Ms)
					p99 = append(p99, r.LatencyP99Ms)
				case r.Scenario == "fanout-rate-js":
					jsServer = append(jsServer, perM(r.ServerCPUSeconds))
					jsProxy = append(jsProxy, perM(r.ProxyCPUSeconds))
				}
			}
		}
		runs = max(runs, len(delivered), len(serverPerM))
		stats[p.name] = &proxyStats{summary(delivered), summary(maxServerPerM), summary(maxProxyPerM),
			summary(serverPerM), summary(proxyPerM), summary(p50), summary(p99), summary(jsServer), summary(jsProxy)}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n## Through a proxy\n\n", proxiesBegin)
	fmt.Fprintf(&b, "The same clustered worker (state, one broker, one worker) loaded directly and through each proxy, "+
		"the whole server side (the cluster's three processes and the proxy) on one core, the load tool on the other; "+
		"%d rounds, the paths alternating; median (min-max). nginx %s with one worker process and HAProxy %s with one thread, "+
		"each configured as its documentation configures a WebSocket reverse proxy (the configurations are in bench/proxies.sh); "+
		"our gateway carries the clients' connections to the worker as streams of a few tunnel sessions (internal/tunnel), "+
		"read and written in its epoll loops; with `--tunnels=false` it gives each client a socket of its own to the worker "+
		"and relays the pair, as the other proxies do.\n\n",
		runs, sh("sh", "-c", "nginx -v 2>&1 | sed 's/.*nginx\\///'"), sh("sh", "-c", "haproxy -v | head -1 | awk '{print $3}'"))
	fmt.Fprintf(&b, "CPU per delivered message at the same load on every path: %d publishes per second to 1,000 subscribers "+
		"(%d deliveries per second; `fanout-rate --rate %d`), in CPU-seconds per million delivered. "+
		"Latency: `fanout-rate` at 40 publishes per second. Throughput: `fanout`, as fast as the load tool takes it "+
		"(the tool's core is the limit there: a proxy that coalesces writes into fewer, larger ones eases the tool). "+
		"The last two columns repeat the same-load measurement with a load tool that is not ours: 1,000 official JavaScript clients "+
		"(socketcluster-client 19) and one publisher at the same rate (bench/proxy-load.mjs), the CPU read from /proc the same way.\n\n",
		equalRate, equalRate*1000, equalRate)
	b.WriteString("| path | CPU-s per million delivered, whole server side | of which the proxy | p50 latency ms | p99 latency ms | fan-out msgs/s | its proxy CPU-s per million | JS clients: whole server side | JS clients: of which the proxy |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range proxyPaths {
		s := stats[p.name]
		proxy, maxProxy, jsProxy := cell(s.proxyPerM), cell(s.maxProxyPerM), cell(s.jsProxyPerM)
		if p.name == "direct" {
			proxy, maxProxy, jsProxy = "-", "-", "-"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", p.label, cell(s.serverPerM), proxy, cell(s.p50), cell(s.p99),
			cell(s.delivered), maxProxy, cell(s.jsServerPerM), jsProxy)
	}
	gw, ng, hp := stats["gateway"].proxyPerM, stats["nginx"].proxyPerM, stats["haproxy"].proxyPerM
	b.WriteString("\n")
	if gw.n > 0 && ng.n > 0 && hp.n > 0 {
		// Met only when it holds in every round: our worst below their best.
		verdict := "met"
		switch {
		case gw.med >= ng.med || gw.med >= hp.med:
			verdict = "**not met**"
		case gw.max >= ng.min || gw.max >= hp.min:
			verdict = "**not shown** (the medians favour ours, but the rounds overlap)"
		}
		fmt.Fprintf(&b, "Target: our gateway costs less CPU per delivered message than nginx and HAProxy at the same load: %s "+
			"(the proxy's own CPU-seconds per million delivered, median (min-max): ours %s; nginx %s, %.2fx ours; HAProxy %s, %.2fx ours).\n\n",
			verdict, cell(gw), cell(ng), ng.med/gw.med, cell(hp), hp.med/gw.med)
	}
	if jgw, jng, jhp := stats["gateway"].jsProxyPerM, stats["nginx"].jsProxyPerM, stats["haproxy"].jsProxyPerM; jgw.n > 0 && jng.n > 0 && jhp.n > 0 {
		fmt.Fprintf(&b, "Cross-check with the official JS client as the load: the proxy's own CPU-seconds per million delivered, ours %s; "+
			"nginx %s, %.2fx ours; HAProxy %s, %.2fx ours.\n\n", cell(jgw), cell(jng), jng.med/jgw.med, cell(jhp), jhp.med/jgw.med)
	}
	fmt.Fprintf(&b, "Produced by `%s` on %s (%d CPUs), %s.\n%s\n", command, cpuModel(), runtime.NumCPU(), sh("date", "-u", "+%Y-%m-%d"), proxiesEnd)

	old, _ := os.ReadFile(out)
	doc := replaceSection(string(old), b.String())
	if err := os.WriteFile(out, []byte(doc), 0o644); err != nil {
		log.Fatal(err)
	}
}

// replaceSection puts section in place of the doc's proxies section, or
// at its end.
func replaceSection(doc, section string) string {
	i := strings.Index(doc, proxiesBegin)
	j := strings.Index(doc, proxiesEnd)
	if i < 0 || j < i {
		return strings.TrimRight(doc, "\n") + "\n\n" + section
	}
	return doc[:i] + section + strings.TrimPrefix(doc[j+len(proxiesEnd):], "\n")
}

// keptSection is the proxies section of the doc at path ("" when none).
func keptSection(path string) string {
	old, _ := os.ReadFile(path)
	doc := string(old)
	i := strings.Index(doc, proxiesBegin)
	j := strings.Index(doc, proxiesEnd)
	if i < 0 || j < i {
		return ""
	}
	return doc[i:j+len(proxiesEnd)] + "\n"
}

func summary(vs []float64) stat {
	if len(vs) == 0 {
		return stat{}
	}
	slices.Sort(vs)
	return stat{med: median(vs), min: vs[0], max: vs[len(vs)-1], n: len(vs)}
}

func cell(s stat) string {
	if s.n == 0 {
		return "-"
	}
	if s.n == 1 {
		return num(s.med)
	}
	return fmt.Sprintf("%s (%s-%s)", num(s.med), num(s.min), num(s.max))
}
