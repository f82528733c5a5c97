package worker

// Draining: a worker that is leaving, or whose sockets came through a
// gateway that is leaving, closes them at a pace (Config.DrainRate), so
// the workers that take the clients back see a ramp, not a herd. Each
// socket keeps receiving until its own close frame is written.

import (
	"context"
	"time"
)

// GatewayHeader names the gateway an upgrade request came through; the
// gateway sets it (replacing any the client sent). A worker closes the
// sockets of a gateway that the cluster view shows draining. A client
// that forges it can only get itself closed early, with a code that makes
// it reconnect.
const GatewayHeader = "X-Scc-Gateway"

// drainTick is how often a paced drain closes its next share of sockets.
const drainTick = 10 * time.Millisecond

// drainSyncTimeout bounds the wait for the brokers before a batch of
// closes: a broker that does not answer does not hold the drain up.
const drainSyncTimeout = time.Second

// Draining is implemented by a Broker that can tell the cluster this
// server is leaving (gateways then stop routing to it).
type Draining interface{ Drain() }

// Syncer is implemented by a Broker whose deliveries arrive
// asynchronously: Sync returns once everything the broker applied before
// the call has been delivered to this server.
type Syncer interface {
	Sync(ctx context.Context) error
}

// Shutdown stops accepting connections, tells the cluster this worker is
// leaving, and closes every socket with CloseDraining at Config.DrainRate
// (clients reconnect at once, elsewhere); each socket gets everything
// published to its channels until its close frame is written. When ctx
// ends first, the sockets still open are closed at once. Shutdown waits
// for the sockets' readers to finish and releases the server.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	if d, ok := s.broker.(Draining); ok {
		d.Drain()
	}
	s.closePaced(ctx, s.snapshotSockets(nil))
	done := make(chan struct{})
	go func() { s.readers.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		for _, sock := range s.snapshotSockets(nil) {
			sock.ws.Close()
		}
	}
	s.Close()
	return err
}

// DrainGateway closes, at Config.DrainRate, the sockets that came through
// the gateway with this id (GatewayHeader): it is leaving, and its clients
// reconnect through another. It returns at once; a drain of the same
// gateway already running is not started again.
func (s *Server) DrainGateway(id string) {
	s.drainWhere("gateway "+id, "gateway draining: closing its sockets", func(sock *Socket) bool { return sock.gateway == id })
}

// DrainClients closes every socket at Config.DrainRate, as a drain does,
// while the server keeps running: the cluster layer calls it when this
// worker cannot serve its clients' channels and the other workers can
// (why says which), and they reconnect there. It returns at once.
func (s *Server) DrainClients(why string) {
	s.drainWhere("all", "handing every client over: "+why, func(*Socket) bool { return true })
}

// drainWhere closes, at the drain pace, the sockets pick chooses, unless a
// drain under the same key is running.
func (s *Server) drainWhere(key, what string, pick func(*Socket) bool) {
	s.drainMu.Lock()
	if s.drains == nil {
		s.drains = make(map[string]bool)
	}
	if s.drains[key] {
		s.drainMu.Unlock()
		return
	}
	s.drains[key] = true
	s.drainMu.Unlock()
	var socks []*Socket
	for _, sock := range s.snapshotSockets(nil) {
		if pick(sock) {
			socks = append(socks, sock)
		}
	}
	s.log.Info(what, "sockets", len(socks))
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer cancel()
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	go func() {
		defer cancel()
		s.closePaced(ctx, socks)
		s.drainMu.Lock()
		delete(s.drains, key)
		s.drainMu.Unlock()
	}()
}

// closePaced closes socks with CloseDraining at Config.DrainRate (all at
// once when it is negative). Before each batch the broker is synced, so
// everything published before the batch was chosen is in the sockets'
// queues ahead of their close frames. When ctx ends, the rest are closed
// at once.
func (s *Server) closePaced(ctx context.Context, socks []*Socket) {
	rate := s.cfg.DrainRate
	sy, _ := s.broker.(Syncer)
	start := time.Now()
	t := time.NewTicker(drainTick)
	defer t.Stop()
	for i := 0; i < len(socks); {
		n := len(socks) - i
		if rate > 0 {
			due := int(rate*time.Since(start).Seconds()) + 1
			n = min(n, max(due-i, 0))
		}
		if n > 0 {
			if sy != nil {
				sctx, cancel := context.WithTimeout(ctx, drainSyncTimeout)
				if err := sy.Sync(sctx); err != nil {
					s.log.Debug("drain: broker sync failed", "err", err)
				}
				cancel()
			}
			for _, sock := range socks[i : i+n] {
				sock.drainClose(CloseDraining, "server draining")
			}
			s.metrics.drained.Add(float64(n))
			i += n
		}
		if i == len(socks) {
			return
		}
		select {
		case <-ctx.Done():
			for _, sock := range socks[i:] {
				sock.closeWith(CloseDraining, "server draining")
			}
			s.metrics.drained.Add(float64(len(socks) - i))
			return
		case <-t.C:
		}
	}
}

// drainClose closes the socket with code after everything queued for it,
// and, unlike closeWith, keeps queueing what is delivered to it until the
// writer takes the close: the socket hears every message published to
// its channels before its close frame is written.
func (s *Socket) drainClose(code int, reason string) {
	if s.state.Load() != stateClosed {
		s.queueClose(code, reason, false)
	}
}
