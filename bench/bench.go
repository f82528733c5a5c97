// Package bench is scc's load tool: it drives any SocketCluster server
// (ours, or socketcluster-server itself) with the scenarios our performance
// targets are stated in, and reports what it saw: deliveries it received
// (never what it merely expected), latency from publisher timestamps
// carried in the payload, the server's CPU seconds and memory from /proc,
// errors and disconnects. Every scenario is bounded in time.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/gorilla/websocket"
	"github.com/scc-k8s/scc/pkg/client"
)

// Config describes one run.
type Config struct {
	// URL is the endpoint (ws://host:port/socketcluster/, or for
	// Centrifugo ws://host:port/connection/websocket).
	URL string
	// URLs, when set, spreads connections over several servers in turn
	// (the cluster scenario: subscribers on every worker); the first
	// connection of a scenario, the publisher of fan-out, goes to URL.
	URLs []string
	// Target is "sc" (any SocketCluster server, the default) or
	// "centrifugo" (its JSON protocol).
	Target string
	// ProtocolVersion is 1 or 2 (default 2).
	ProtocolVersion int
	// Scenario is one of Scenarios.
	Scenario string
	// Duration of the measured part (default 5s).
	Duration time.Duration
	// Warmup before measuring (default 1s).
	Warmup time.Duration
	// Connections: subscribers (fanout, hot), connections (channels, idle,
	// storm). Defaults per scenario.
	Connections int
	// InFlight publishes per publisher (fanout 20, channels 1, hot 1000),
	// or subscribes outstanding (churn 256).
	InFlight int
	// Rate is the publish rate of fanout-rate (default 40/s).
	Rate int
	// PayloadSize in bytes of each message (default 64).
	PayloadSize int
	// ServerPID, when set, is read for CPU seconds and memory; so is every
	// process in ServerPIDs (a cluster's state, brokers and workers).
	ServerPID  int
	ServerPIDs []int
	// ProxyPIDs are the processes of a proxy in front of the server (our
	// gateway, nginx, HAProxy): their CPU seconds are reported on their
	// own too (Result.ProxyCPUSeconds), and counted in the server's.
	ProxyPIDs []int
	// Compress offers permessage-deflate on every connection (gorilla's
	// client: no context takeover, as our server agrees to). Default false.
	Compress bool
	// Batch sends frames queued together as one JSON array per WebSocket
	// message (client.Options.Batch). Default false: one frame per
	// message, the official client's traffic.
	Batch bool
}

// Scenarios the tool runs.
var Scenarios = []string{"fanout", "fanout-rate", "channels", "churn", "hot", "idle", "storm"}

// Result is what one run measured.
type Result struct {
	Scenario          string  `json:"scenario"`
	Seconds           float64 `json:"seconds"`
	Connections       int     `json:"connections"`
	Published         int64   `json:"published"`
	PublishesPerSec   float64 `json:"publishes_per_sec"`
	Delivered         int64   `json:"delivered"`
	DeliveredPerSec   float64 `json:"delivered_per_sec"`
	Operations        int64   `json:"operations,omitempty"`
	OperationsPerSec  float64 `json:"operations_per_sec,omitempty"`
	LatencyP50Ms      float64 `json:"latency_p50_ms,omitempty"`
	LatencyP90Ms      float64 `json:"latency_p90_ms,omitempty"`
	LatencyP99Ms      float64 `json:"latency_p99_ms,omitempty"`
	LatencyMaxMs      float64 `json:"latency_max_ms,omitempty"`
	ServerCPUSeconds  float64 `json:"server_cpu_seconds,omitempty"`
	ProxyCPUSeconds   float64 `json:"proxy_cpu_seconds,omitempty"`
	DeliveredPerCPUs  float64 `json:"delivered_per_cpu_second,omitempty"`
	ServerRSSBytes    int64   `json:"server_rss_bytes,omitempty"`
	RSSPerConnection  float64 `json:"rss_per_connection_bytes,omitempty"`
	Errors            int64   `json:"errors"`
	Disconnects       int64   `json:"disconnects"`
	UnexpectedPayload int64   `json:"unexpected_payloads"`
}

// Run executes one scenario.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.URL == "" {
		return nil, errors.New("bench: a URL is required")
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 5 * time.Second
	}
	if cfg.Warmup < 0 {
		cfg.Warmup = 0
	} else if cfg.Warmup == 0 {
		cfg.Warmup = time.Second
	}
	if cfg.PayloadSize < 16 {
		cfg.PayloadSize = 64
	}
	if cfg.ServerPID > 0 {
		cfg.ServerPIDs = append([]int{cfg.ServerPID}, cfg.ServerPIDs...)
	}
	r := &runner{cfg: cfg, res: &Result{Scenario: cfg.Scenario}}
	defer r.closeAll()
	var err error
	switch cfg.Scenario {
	case "fanout":
		err = r.fanout(ctx, def(cfg.Connections, 1000), def(cfg.InFlight, 20), 0)
	case "fanout-rate":
		err = r.fanout(ctx, def(cfg.Connections, 1000), 0, def(cfg.Rate, 40))
	case "hot":
		err = r.fanout(ctx, def(cfg.Connections, 10), def(cfg.InFlight, 1000), 0)
	case "channels":
		err = r.channels(ctx, def(cfg.Connections, 2000), def(cfg.InFlight, 1))
	case "churn":
		err = r.churn(ctx, def(cfg.InFlight, 256))
	case "idle":
		err = r.idle(ctx, def(cfg.Connections, 10000))
	case "storm":
		err = r.storm(ctx, def(cfg.Connections, 2000))
	default:
		return nil, fmt.Errorf("bench: unknown scenario %q (have %s)", cfg.Scenario, strings.Join(Scenarios, ", "))
	}
	if err != nil {
		return nil, err
	}
	return r.res, nil
}

func def(v, d int) int {
	if v > 0 {
		return v
	}
	return d
}

type runner struct {
	cfg     Config
	res     *Result
	mu      sync.Mutex
	clients []conn

	dials     atomic.Int64
	measuring atomic.Bool
	delivered atomic.Int64
	published atomic.Int64
	errs      atomic.Int64
	discs     atomic.Int64
	bad       atomic.Int64
	latMu     sync.Mutex
	lat       []time.Duration
	start     time.Time
}

// url picks the server for the next connection.
func (r *runner) url() string {
	urls := append([]string{r.cfg.URL}, r.cfg.URLs...)
	return urls[int(r.dials.Add(1)-1)%len(urls)]
}

func (r *runner) dial(ctx context.Context) (conn, error) {
	var c conn
	url := r.url()
	switch r.cfg.Target {
	case "", "sc":
		opts := client.Options{URL: url, ProtocolVersion: r.cfg.ProtocolVersion, NoReconnect: true, Batch: r.cfg.Batch}
		if r.cfg.Compress {
			opts.Dialer = &websocket.Dialer{EnableCompression: true, HandshakeTimeout: 10 * time.Second}
		}
		sc := client.New(opts)
		sc.OnDisconnect(func(*client.CloseError) { r.discs.Add(1) })
		if err := sc.Connect(ctx); err != nil {
			return nil, err
		}
		c = sc
	case "centrifugo":
		cf, err := dialCentrifugo(ctx, url, func() { r.discs.Add(1) }, r.cfg.Batch)
		if err != nil {
			return nil, err
		}
		c = cf
	default:
		return nil, fmt.Errorf("bench: unknown target %q", r.cfg.Target)
	}
	r.mu.Lock()
	r.clients = append(r.clients, c)
	r.mu.Unlock()
	return c, nil
}

func (r *runner) closeAll() {
	r.mu.Lock()
	cs := r.clients
	r.clients = nil
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() { defer wg.Done(); c.Close() }()
	}
	wg.Wait()
}

// payload is a JSON string: a marker, the publish time in nanoseconds and
// padding up to the configured size.
func (r *runner) payload(now time.Time) json.RawMessage {
	s := "scc" + strconv.FormatInt(now.UnixNano(), 36) + "."
	if pad := r.cfg.PayloadSize - len(s) - 2; pad > 0 {
		s += strings.Repeat("x", pad)
	}
	return json.RawMessage(`"` + s + `"`)
}

// received counts a delivery the tool actually got and records its
// latency, from the publish time in the payload to when the message
// carrying it was read, when measuring.
func (r *runner) received(data json.RawMessage, at time.Time) {
	if !r.measuring.Load() {
		return
	}
	ns, ok := publishTime(data)
	if !ok {
		r.bad.Add(1)
		return
	}
	r.delivered.Add(1)
	d := at.Sub(time.Unix(0, ns))
	r.latMu.Lock()
	if len(r.lat) < 2_000_000 {
		r.lat = append(r.lat, d)
	}
	r.latMu.Unlock()
}

// publishTime reads the publish time from a payload the tool made:
// "scc<unix nanos in base 36>.<padding>".
func publishTime(data []byte) (int64, bool) {
	if len(data) < 7 || string(data[:4]) != `"scc` {
		return 0, false
	}
	var ns int64
	for i := 4; i < len(data) && i < 20; i++ {
		c := data[i]
		switch {
		case c == '.':
			return ns, i > 4
		case c >= '0' && c <= '9':
			ns = ns*36 + int64(c-'0')
		case c >= 'a' && c <= 'z':
			ns = ns*36 + int64(c-'a'+10)
		default:
			return 0, false
		}
	}
	return 0, false
}

// measure runs warmup then the measured window, then fills the result.
func (r *runner) measure(ctx context.Context, conns int) error {
	select {
	case <-time.After(r.cfg.Warmup):
	case <-ctx.Done():
		return ctx.Err()
	}
	cpu0 := cpuSeconds(r.cfg.ServerPIDs)
	pcpu0 := cpuSeconds(r.cfg.ProxyPIDs)
	r.delivered.Store(0)
	r.published.Store(0)
	r.errs.Store(0)
	r.start = time.Now()
	r.measuring.Store(true)
	select {
	case <-time.After(r.cfg.Duration):
	case <-ctx.Done():
	}
	r.measuring.Store(false)
	elapsed := time.Since(r.start).Seconds()
	cpu1 := cpuSeconds(r.cfg.ServerPIDs)
	pcpu1 := cpuSeconds(r.cfg.ProxyPIDs)
	res := r.res
	res.Seconds = elapsed
	res.Connections = conns
	res.Delivered = r.delivered.Load()
	res.DeliveredPerSec = float64(res.Delivered) / elapsed
	res.Published = r.published.Load()
	res.PublishesPerSec = float64(res.Published) / elapsed
	res.Errors = r.errs.Load()
	res.Disconnects = r.discs.Load()
	res.UnexpectedPayload = r.bad.Load()
	if pcpu0 >= 0 && pcpu1 >= 0 {
		res.ProxyCPUSeconds = pcpu1 - pcpu0
	}
	if cpu0 >= 0 && cpu1 >= 0 {
		res.ServerCPUSeconds = cpu1 - cpu0
		if res.ServerCPUSeconds > 0 {
			res.DeliveredPerCPUs = float64(res.Delivered) / res.ServerCPUSeconds
		}
	}
	if rss := rssBytes(r.cfg.ServerPIDs); rss > 0 {
		res.ServerRSSBytes = rss
	}
	r.latMu.Lock()
	lat := r.lat
	r.lat = nil
	r.latMu.Unlock()
	if len(lat) > 0 {
		slices.Sort(lat)
		q := func(p float64) float64 {
			return float64(lat[min(len(lat)-1, int(math.Ceil(p*float64(len(lat))))-1)]) / 1e6
		}
		res.LatencyP50Ms, res.LatencyP90Ms, res.LatencyP99Ms = q(0.50), q(0.90), q(0.99)
		res.LatencyMaxMs = float64(lat[len(lat)-1]) / 1e6
	}
	return nil
}

// fanout: subscribers on one channel; one publisher either keeps inFlight
// acked publishes outstanding or publishes at a fixed rate.
func (r *runner) fanout(ctx context.Context, subs, inFlight, rate int) error {
	const ch = "bench-fanout"
	if _, err := r.subscribers(ctx, subs, func(int) string { return ch }); err != nil {
		return err
	}
	pub, err := r.dial(ctx)
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	if rate > 0 {
		go func() {
			defer wg.Done()
			t := time.NewTicker(time.Second / time.Duration(rate))
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					pub.PublishAsync(ch, r.payload(time.Now()), r.acked)
				}
			}
		}()
	} else {
		go func() { defer wg.Done(); r.keepInFlight(pub, inFlight, stop, func(int) string { return ch }) }()
	}
	err = r.measure(ctx, subs)
	close(stop)
	wg.Wait()
	return err
}

func (r *runner) acked(err error) {
	if err != nil {
		r.errs.Add(1)
		return
	}
	if r.measuring.Load() {
		r.published.Add(1)
	}
}

// keepInFlight publishes so that n publishes await their ack at any time.
func (r *runner) keepInFlight(c conn, n int, stop chan struct{}, channel func(i int) string) {
	slots := make(chan struct{}, n)
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case slots <- struct{}{}:
		}
		c.PublishAsync(channel(i), r.payload(time.Now()), func(err error) {
			r.acked(err)
			<-slots
		})
	}
}

// subscribers opens n connections, the i-th subscribed to channel(i),
// and returns them in that order.
func (r *runner) subscribers(ctx context.Context, n int, channel func(i int) string) ([]conn, error) {
	conns, err := r.dialAll(ctx, n, 64, func(i int, c conn) error {
		return c.Subscribe(ctx, channel(i), func(_ string, d json.RawMessage) { r.received(d, c.ReceivedAt()) })
	})
	if err != nil {
		return nil, fmt.Errorf("bench: subscriber: %w", err)
	}
	return conns, nil
}

// dialAll opens n connections, parallel at a time, runs then (if set) on
// each, and returns them in index order.
func (r *runner) dialAll(ctx context.Context, n, parallel int, then func(i int, c conn) error) ([]conn, error) {
	conns := make([]conn, n)
	errc := make(chan error, n)
	sem := make(chan struct{}, parallel)
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			c, err := r.dial(ctx)
			if err == nil {
				conns[i] = c
				if then != nil {
					err = then(i, c)
				}
			}
			errc <- err
		}()
	}
	var first error
	for i := 0; i < n; i++ {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return conns, first
}

// channels: n connections, each subscribed to its own channel and
// publishing to it with inFlight outstanding.
func (r *runner) channels(ctx context.Context, n, inFlight int) error {
	name := func(i int) string { return "bench-ch-" + strconv.Itoa(i) }
	cs, err := r.subscribers(ctx, n, name)
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		ch := name(i)
		go func() { defer wg.Done(); r.keepInFlight(c, inFlight, stop, func(int) string { return ch }) }()
	}
	err = r.measure(ctx, n)
	close(stop)
	wg.Wait()
	return err
}

// churn: one connection subscribing and unsubscribing fresh channels as
// fast as subscribe acks return (inFlight outstanding); an operation is one
// acknowledged subscribe plus its unsubscribe. The pipeline runs on
// callbacks, so the tool spends nothing on goroutines per operation.
func (r *runner) churn(ctx context.Context, inFlight int) error {
	c, err := r.dial(ctx)
	if err != nil {
		return err
	}
	var ops atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		slots := make(chan struct{}, inFlight)
		nop := func(string, json.RawMessage) {}
		for i := 0; ; i++ {
			select {
			case <-stop:
				for range cap(slots) { // the outstanding ones
					slots <- struct{}{}
				}
				return
			case slots <- struct{}{}:
			}
			ch := "bench-churn-" + strconv.Itoa(i)
			c.SubscribeAsync(ch, nop, func(err error) {
				defer func() { <-slots }()
				if err != nil {
					r.errs.Add(1)
					return
				}
				if err := c.Unsubscribe(ch); err != nil {
					r.errs.Add(1)
					return
				}
				if r.measuring.Load() {
					ops.Add(1)
				}
			})
		}
	}()
	err = r.measure(ctx, 1)
	close(stop)
	<-done
	r.res.Operations = ops.Load()
	r.res.OperationsPerSec = float64(r.res.Operations) / r.res.Seconds
	return err
}

// idle: n connections that only answer pings; the server's memory growth
// per connection.
func (r *runner) idle(ctx context.Context, n int) error {
	base := rssBytes(r.cfg.ServerPIDs)
	if err := r.connect(ctx, n); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond) // let the server settle
	if err := r.measure(ctx, n); err != nil {
		return err
	}
	if base > 0 && r.res.ServerRSSBytes > 0 {
		r.res.RSSPerConnection = float64(r.res.ServerRSSBytes-base) / float64(n)
	}
	return nil
}

func (r *runner) connect(ctx context.Context, n int) error {
	if _, err := r.dialAll(ctx, n, 128, nil); err != nil {
		return fmt.Errorf("bench: connect: %w", err)
	}
	return nil
}

// storm: n connections opened (handshake done) as fast as possible; an
// operation is one completed handshake.
func (r *runner) storm(ctx context.Context, n int) error {
	cpu0 := cpuSeconds(r.cfg.ServerPIDs)
	pcpu0 := cpuSeconds(r.cfg.ProxyPIDs)
	start := time.Now()
	if err := r.connect(ctx, n); err != nil {
		return err
	}
	elapsed := time.Since(start).Seconds()
	r.res.Seconds = elapsed
	r.res.Connections = n
	r.res.Operations = int64(n)
	r.res.OperationsPerSec = float64(n) / elapsed
	if cpu0 >= 0 {
		r.res.ServerCPUSeconds = cpuSeconds(r.cfg.ServerPIDs) - cpu0
	}
	if pcpu0 >= 0 {
		r.res.ProxyCPUSeconds = cpuSeconds(r.cfg.ProxyPIDs) - pcpu0
	}
	r.res.Disconnects = r.discs.Load()
	return nil
}

// cpuSeconds sums utime+stime of the processes (-1 when unknown).
func cpuSeconds(pids []int) float64 {
	if len(pids) == 0 {
		return -1
	}
	total := 0.0
	for _, pid := range pids {
		s := cpuSecondsOf(pid)
		if s < 0 {
			return -1
		}
		total += s
	}
	return total
}

func cpuSecondsOf(pid int) float64 {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return -1
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

// rssBytes sums VmRSS of the processes (0 when unknown).
func rssBytes(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		total += rssBytesOf(pid)
	}
	return total
}

func rssBytesOf(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// WriteTable prints results as an aligned table.
func WriteTable(w io.Writer, results []*Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tconns\tpublished/s\tdelivered/s\tops/s\tp50 ms\tp99 ms\tserver CPU s\tdelivered/CPU s\tRSS/conn KiB\terrors\tdisconnects\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%.0f\t%.1f\t%d\t%d\t\n", r.Scenario, r.Connections,
			r.PublishesPerSec, r.DeliveredPerSec, r.OperationsPerSec, r.LatencyP50Ms, r.LatencyP99Ms, r.ServerCPUSeconds,
			r.DeliveredPerCPUs, r.RSSPerConnection/1024, r.Errors, r.Disconnects)
	}
	tw.Flush()
}
