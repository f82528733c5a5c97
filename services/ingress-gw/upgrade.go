package gateway

// Routing a WebSocket upgrade to a worker, then moving its bytes.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/scc-k8s/scc/internal/tunnel"
)

// isUpgrade reports a WebSocket upgrade request.
func isUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") &&
		headerHasToken(r.Header, "Connection", "upgrade")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// serveUpgrade sends the upgrade to the least-loaded routable worker (and
// to others when one cannot be dialled or is draining), relays a refusal
// as it is, and, on 101, hands the connection on to be relayed. It
// reports whether it did: the tunnel then releases ip's slot.
func (g *Gateway) serveUpgrade(w http.ResponseWriter, r *http.Request, ip string) bool {
	if r.URL.Path != g.cfg.Path {
		g.m.refused.WithLabelValues("path").Inc()
		http.Error(w, "no WebSocket endpoint at this path", http.StatusNotFound)
		return false
	}
	if g.draining.Load() {
		g.m.refused.WithLabelValues("draining").Inc()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "gateway draining", http.StatusServiceUnavailable)
		return false
	}
	if !g.rate.allow(time.Now()) {
		g.m.refused.WithLabelValues("upgrade_rate").Inc()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many new connections; retry", http.StatusServiceUnavailable)
		return false
	}
	var tried []*backend
	for attempt := 0; attempt <= g.cfg.Retries; attempt++ {
		var b *backend
		if attempt == 0 {
			b = g.bal.await(r.Context(), g.cfg.NoWorkerWait)
		} else {
			b = g.bal.pick(tried)
		}
		if b == nil {
			break
		}
		if attempt > 0 {
			g.m.retries.Inc()
		}
		if g.relays != nil && !g.cfg.DisableTunnels && !b.noTunnel.Load() {
			served, err := g.serveTunneled(w, r, b, ip)
			switch {
			case err == nil:
				return served
			case errors.Is(err, tunnel.ErrUnsupported): // an older worker: a socket of its own
				b.noTunnel.Store(true)
			default:
				g.log.Debug("worker upgrade failed; trying another", "worker", b.id, "err", err)
				g.bal.done(b)
				tried = append(tried, b)
				continue
			}
		}
		wc, br, resp, err := g.dialUpgrade(r, b, ip)
		if err != nil {
			g.log.Debug("worker upgrade failed; trying another", "worker", b.id, "err", err)
			g.bal.done(b)
			tried = append(tried, b)
			continue
		}
		if resp.StatusCode == http.StatusServiceUnavailable { // draining: the next one
			wc.Close()
			g.bal.done(b)
			tried = append(tried, b)
			continue
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			g.m.upgrades.WithLabelValues("worker_refused").Inc()
			relayRefusal(w, resp)
			wc.Close()
			g.bal.done(b)
			return false
		}
		return g.splice(w, wc, br, resp, b, ip)
	}
	result := "no_worker"
	if len(tried) > 0 {
		result = "failed"
	}
	g.m.upgrades.WithLabelValues(result).Inc()
	w.Header().Set("Retry-After", "1")
	http.Error(w, "no worker available", http.StatusServiceUnavailable)
	return false
}

// dialUpgrade connects to the worker, forwards the upgrade request and
// reads the worker's answer, all within DialTimeout.
func (g *Gateway) dialUpgrade(r *http.Request, b *backend, ip string) (net.Conn, *bufio.Reader, *http.Response, error) {
	d := net.Dialer{Timeout: g.cfg.DialTimeout}
	wc, err := d.DialContext(r.Context(), "tcp", b.addr)
	if err != nil {
		return nil, nil, nil, err
	}
	_ = wc.SetDeadline(time.Now().Add(g.cfg.DialTimeout))
	if _, err := wc.Write(g.upgradeRequest(r, ip)); err != nil {
		wc.Close()
		return nil, nil, nil, err
	}
	br := bufio.NewReaderSize(wc, 2048)
	resp, err := http.ReadResponse(br, r)
	if err != nil {
		wc.Close()
		return nil, nil, nil, err
	}
	_ = wc.SetDeadline(time.Time{})
	return wc, br, resp, nil
}

// upgradeRequest is the client's upgrade request as the worker gets it:
// what the client claimed about proxies replaced by what the gateway
// knows.
func (g *Gateway) upgradeRequest(r *http.Request, ip string) []byte {
	var req bytes.Buffer
	req.Grow(1024)
	req.WriteString(r.Method + " " + r.URL.RequestURI() + " HTTP/1.1\r\nHost: " + r.Host + "\r\n")
	h := r.Header.Clone()
	// The gateway is the edge: what a client claims about proxies before
	// it is not passed on.
	for _, k := range []string{GatewayHeader, "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded"} {
		h.Del(k)
	}
	h.Set(GatewayHeader, g.cfg.ID)
	h.Set("X-Forwarded-For", ip)
	h.Set("X-Forwarded-Host", r.Host)
	proto := "http"
	if g.tls {
		proto = "https"
	}
	h.Set("X-Forwarded-Proto", proto)
	_ = h.Write(&req)
	req.WriteString("\r\n")
	return req.Bytes()
}

// relayRefusal passes a worker's refusal (403 for an origin, 401 from its
// handshake middleware, ...) to the client.
func relayRefusal(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Content-Length":
			continue
		}
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 64<<10))
}

// splice completes the upgrade with the client and hands the pair to a
// relay loop (plain TCP) or to two pumps (TLS). It reports whether the
// tunnel was set up (then it releases ip's slot when it closes).
func (g *Gateway) splice(w http.ResponseWriter, wc net.Conn, br *bufio.Reader, resp *http.Response, b *backend, ip string) bool {
	var tail frameTail
	cc, early, err := g.answerClient(w, br, resp, &tail)
	if err == nil && len(early) > 0 {
		_, err = wc.Write(early)
	}
	if err != nil {
		wc.Close()
		g.upgradeFailed(cc, b)
		return false
	}
	done := g.opened(b, ip)
	if g.relays != nil {
		if err := g.relays.add(cc, wc, tail, done); err == nil {
			return true
		}
	}
	p := &proxied{client: cc, worker: wc, tail: tail}
	g.connsMu.Lock()
	g.conns[p] = struct{}{}
	g.connsMu.Unlock()
	g.pumps.Add(1)
	go func() {
		defer g.pumps.Done()
		g.pumpPair(p)
		g.connsMu.Lock()
		delete(g.conns, p)
		g.connsMu.Unlock()
		done()
	}()
	return true
}

// upgradeFailed closes the client's connection (when it was taken over)
// after a worker said 101 but the tunnel could not be set up, and
// uncounts it.
func (g *Gateway) upgradeFailed(cc net.Conn, b *backend) {
	if cc != nil {
		cc.Close()
	}
	g.bal.done(b)
	g.m.upgrades.WithLabelValues("failed").Inc()
}

// answerClient takes the client's connection over and writes it the
// worker's 101, with the worker's first frames when they came with it
// (read into br; tail follows them). It returns what the client sent
// after its request, for the worker.
func (g *Gateway) answerClient(w http.ResponseWriter, br *bufio.Reader, resp *http.Response, tail *frameTail) (net.Conn, []byte, error) {
	cc, cbuf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, err
	}
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = resp.Header.Write(&head)
	head.WriteString("\r\n")
	if n := br.Buffered(); n > 0 { // the worker's first frames, read with its answer
		chunk, _ := br.Peek(n)
		head.Write(chunk)
		tail.feed(chunk)
	}
	_ = cc.SetDeadline(time.Time{})
	if _, err := cc.Write(head.Bytes()); err != nil {
		return cc, nil, err
	}
	var early []byte
	if n := cbuf.Reader.Buffered(); n > 0 { // the client's first frames
		early, _ = cbuf.Reader.Peek(n)
	}
	return cc, early, nil
}

// opened counts an upgraded connection and returns what uncounts it when
// it closes.
func (g *Gateway) opened(b *backend, ip string) func() {
	g.m.upgrades.WithLabelValues("ok").Inc()
	g.nConns.Add(1)
	g.m.connections.Inc()
	return func() {
		g.nConns.Add(-1)
		g.m.connections.Dec()
		g.bal.done(b)
		g.perIP.release(ip)
	}
}

// pumpPair moves a tunnel's bytes with one goroutine per direction. When
// either direction ends, the other is half-closed; when both have (or
// halfCloseGrace after the first), both connections close.
func (g *Gateway) pumpPair(p *proxied) {
	in, out := g.m.bytes.WithLabelValues("in"), g.m.bytes.WithLabelValues("out")
	done := make(chan struct{})
	go func() {
		_ = pump(p.worker, p.client, func(n int) { in.Add(float64(n)) }, nil)
		closeWrite(p.worker)
		close(done)
	}()
	err := pump(p.client, p.worker, func(n int) { out.Add(float64(n)) }, &p.tail)
	select {
	case <-done: // the client's end came first; the worker's followed it
	default:
		if !errors.Is(err, errWrite) && p.tail.sayGone() {
			// The worker's end came first, unannounced (or the drain
			// deadline ended it: endWorkers).
			cut := g.cutting.Load()
			if _, err := p.client.Write(byeFrame(cut)); err == nil {
				g.m.told(cut)
			}
		}
	}
	closeWrite(p.client)
	select {
	case <-done:
	case <-time.After(halfCloseGrace):
	}
	p.client.Close()
	p.worker.Close()
	<-done
}
