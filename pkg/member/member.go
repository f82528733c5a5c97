// Package member keeps a component registered with the state service: it
// holds the Join stream open, registers (with the member's current view, so
// a restarted state can resume a migration), sends heartbeats, acks and
// drain requests, hands every cluster view to the component, and
// reconnects with backoff when the stream breaks. While state is away the
// component keeps its last view.
package member

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/scc-k8s/scc/pkg/grpcx"
	"github.com/scc-k8s/scc/proto/sccv1"
)

// Config configures a membership client.
type Config struct {
	// StateAddr is the state service's address (host:port). Required.
	StateAddr string
	// GRPC carries the cluster token and TLS settings.
	GRPC grpcx.Config
	// Member describes this component (id, role, address). Required.
	Member *sccv1.Member
	// View, when set, reports the view the component applies, sent at
	// every registration.
	View func() *sccv1.View
	// Load, when set, is reported in heartbeats.
	Load func() uint64
	// Ready, when set, is the member's readiness, reported at registration
	// and in heartbeats; without it the member is always ready.
	Ready func() bool
	// LostLinks, when set (workers), lists the member's streams to brokers
	// that ended unreplaced (Member.lost_links), reported at registration
	// and in heartbeats.
	LostLinks func() []*sccv1.LostLink
	// OnView receives every view, in order, on one goroutine. It must not
	// block for long.
	OnView func(*sccv1.ClusterView)
	// HeartbeatInterval defaults to 1s.
	HeartbeatInterval time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Client is a running membership.
type Client struct {
	cfg    Config
	conn   *grpc.ClientConn // owned by run once started
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	out      chan *sccv1.JoinRequest // the current stream's sender queue
	draining bool
	joined   bool
}

// Start dials state and keeps the membership up until Close.
func Start(cfg Config) (*Client, error) {
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	conn, err := grpcx.Dial(cfg.StateAddr, cfg.GRPC)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{cfg: cfg, conn: conn, ctx: ctx, cancel: cancel}
	c.wg.Add(1)
	go c.run()
	return c, nil
}

// Joined reports whether the stream to state is up.
func (c *Client) Joined() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.joined
}

// redialAfter is how long the state connection may keep failing before it
// is closed and dialled afresh: a gRPC channel that failed early (a name
// without DNS records yet, a Service without endpoints) backs off its
// resolver and its reconnects for tens of seconds, while a fresh one tries
// at once.
const redialAfter = time.Second

// readyEvery is how often the member's readiness is looked at.
const readyEvery = 50 * time.Millisecond

// reportEvery spaces the Info lines that say why state cannot be reached.
const reportEvery = 5 * time.Second

func (c *Client) run() {
	defer c.wg.Done()
	defer func() { c.conn.Close() }()
	backoff := 25 * time.Millisecond
	var failingSince, dialed, reported time.Time
	dialed = time.Now()
	for c.ctx.Err() == nil {
		start := time.Now()
		err := c.session()
		if c.ctx.Err() != nil {
			return
		}
		if time.Since(start) > 5*time.Second {
			backoff = 25 * time.Millisecond
			failingSince = time.Time{}
		}
		now := time.Now()
		if failingSince.IsZero() {
			failingSince = now
		}
		c.cfg.Logger.Debug("state stream ended; rejoining", "err", err, "backoff", backoff)
		if now.Sub(failingSince) >= reportEvery && now.Sub(reported) >= reportEvery {
			c.cfg.Logger.Info("cannot reach state", "state", c.cfg.StateAddr, "err", err,
				"for", now.Sub(failingSince).Round(time.Second))
			reported = now
		}
		if now.Sub(dialed) >= redialAfter {
			if conn, derr := grpcx.Dial(c.cfg.StateAddr, c.cfg.GRPC); derr == nil {
				c.conn.Close()
				c.conn, dialed = conn, now
			}
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(backoff):
		}
		// Capped low: a restarted state should see its members back
		// within its settle window, a late one within a second.
		backoff = min(backoff*2, 250*time.Millisecond)
	}
}

// session runs one Join stream: one goroutine owns Send, this one Recv.
func (c *Client) session() error {
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	stream, err := sccv1.NewStateClient(c.conn).Join(ctx)
	if err != nil {
		return err
	}
	out := make(chan *sccv1.JoinRequest, 256)
	c.mu.Lock()
	m := proto.Clone(c.cfg.Member).(*sccv1.Member)
	m.Draining = c.draining
	c.mu.Unlock()
	hb := c.report()
	m.Load, m.Ready, m.LostLinks = hb.Load, hb.Ready, hb.LostLinks
	reg := &sccv1.Register{Member: m}
	if c.cfg.View != nil {
		reg.View = c.cfg.View()
	}
	if err := stream.Send(&sccv1.JoinRequest{Msg: &sccv1.JoinRequest_Register{Register: reg}}); err != nil {
		return err
	}
	c.mu.Lock()
	c.out = out
	c.joined = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.out == out {
			c.out = nil
		}
		c.joined = false
		c.mu.Unlock()
	}()
	sendErr := make(chan error, 1)
	go func() {
		t := time.NewTicker(c.cfg.HeartbeatInterval)
		defer t.Stop()
		// Readiness and lost links are looked at more often than
		// heartbeats go: a change goes out at once (gateways route by
		// readiness; a broker holding a lost link's subscriptions lets go
		// once the worker reports it lost and without clients).
		rt := time.NewTicker(readyEvery)
		defer rt.Stop()
		sent := urgent(hb)
		for {
			var msg *sccv1.JoinRequest
			select {
			case <-ctx.Done():
				sendErr <- ctx.Err()
				return
			case msg = <-out:
			case <-rt.C:
				hb := c.report()
				u := urgent(hb)
				if u == sent {
					continue
				}
				sent = u
				msg = &sccv1.JoinRequest{Msg: &sccv1.JoinRequest_Heartbeat{Heartbeat: hb}}
			case <-t.C:
				hb := c.report()
				sent = urgent(hb)
				msg = &sccv1.JoinRequest{Msg: &sccv1.JoinRequest_Heartbeat{Heartbeat: hb}}
			}
			if err := stream.Send(msg); err != nil {
				sendErr <- err
				return
			}
		}
	}()
	for {
		v, err := stream.Recv()
		if err != nil {
			cancel()
			<-sendErr
			return err
		}
		if c.cfg.OnView != nil {
			c.cfg.OnView(v)
		}
	}
}

// report is what heartbeats carry: the member's load, readiness and lost
// links.
func (c *Client) report() *sccv1.Heartbeat {
	hb := &sccv1.Heartbeat{Ready: c.cfg.Ready == nil || c.cfg.Ready()}
	if c.cfg.Load != nil {
		hb.Load = c.cfg.Load()
	}
	if c.cfg.LostLinks != nil {
		hb.LostLinks = c.cfg.LostLinks()
	}
	return hb
}

// urgent is the part of a report that goes out as soon as it changes:
// readiness, the lost links, and whether a member with lost links has no
// load left.
func urgent(hb *sccv1.Heartbeat) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%t %t", hb.Ready, len(hb.LostLinks) > 0 && hb.Load == 0)
	for _, l := range hb.LostLinks {
		fmt.Fprintf(&b, " %s:%d", l.BrokerId, l.Link)
	}
	return b.String()
}

func (c *Client) send(msg *sccv1.JoinRequest) bool {
	c.mu.Lock()
	out := c.out
	c.mu.Unlock()
	if out == nil {
		return false
	}
	select {
	case out <- msg:
		return true
	default:
		return false
	}
}

// Ack tells state this member finished phase of epoch. It reports whether
// the ack went out; one that did not is repeated by the next registration,
// whose view state reads.
func (c *Client) Ack(epoch uint64, phase sccv1.Phase) bool {
	return c.send(&sccv1.JoinRequest{Msg: &sccv1.JoinRequest_Ack{Ack: &sccv1.Ack{Epoch: epoch, Phase: phase}}})
}

// Drain asks state to take this member out of the ring (also on every
// later registration).
func (c *Client) Drain() {
	c.mu.Lock()
	c.draining = true
	c.mu.Unlock()
	c.send(&sccv1.JoinRequest{Msg: &sccv1.JoinRequest_Drain{Drain: &sccv1.Drain{}}})
}

// Close leaves: the stream ends, state drops the member at once.
func (c *Client) Close() {
	c.cancel()
	c.wg.Wait() // run closes the connection
}

// DefaultID names a member when none is configured: the hostname (the pod
// name in Kubernetes) and a random suffix, so a restarted process is a new
// member.
func DefaultID(prefix string) string {
	h, _ := os.Hostname()
	if h == "" {
		h = prefix
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return h + "-" + hex.EncodeToString(b[:])
}

// AdvertiseAddr turns a listen address into one others can dial: POD_IP
// (set from the pod's status in Kubernetes) with the port, or the
// listener's own host, or loopback when it listens on every interface.
func AdvertiseAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := os.Getenv("POD_IP"); ip != "" {
		host = ip
	} else if h := net.ParseIP(host); host == "" || (h != nil && h.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
