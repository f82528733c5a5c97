// Package broker is the cluster's channel router. Workers hold one Link
// stream each; the broker keeps, per channel, the set of links subscribed,
// and sends each publish once to each subscribed link. It never parses the
// payloads and knows nothing of clients.
//
// Per link, one goroutine receives and applies operations in order and one
// goroutine owns Send, draining a bounded queue of deliveries and acks into
// as few messages as it can. A link whose queue passes its limit is cut
// (the worker reconnects and subscribes again); it never stalls others.
//
// Lock order: Server.mu, then link.mu.
package broker

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scc-k8s/scc/pkg/ring"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/scc-k8s/scc/pkg/grpcx"
	"github.com/scc-k8s/scc/proto/sccv1"
)

// Config configures a broker.
type Config struct {
	// MaxLinkQueueBytes cuts a link whose unsent deliveries pass this many
	// bytes. Default 64 MiB.
	MaxLinkQueueBytes int
	// MaxBatch caps the deliveries in one stream message. Default 512.
	MaxBatch int
	// LinkTimeout cuts a worker's link when nothing has come on it for
	// this long (workers send a sync each second they have sent nothing
	// else), dropping its subscriptions and its queue: a worker gone
	// silent is noticed in seconds. Default 5s.
	LinkTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives metrics (default: none).
	Registerer prometheus.Registerer
}

// Server implements sccv1.BrokerServer.
type Server struct {
	sccv1.UnimplementedBrokerServer
	cfg Config
	log *slog.Logger
	m   *metrics

	mu       sync.RWMutex
	channels map[string]map[*link]struct{}
	links    map[*link]struct{}

	owner atomic.Pointer[ownership] // nil until the first view
}

// ownership is what this broker owns in the newest ring it knows.
type ownership struct {
	id        string
	epoch     uint64
	cur, prev *ring.Ring
}

// owns reports whether a publish routed at epoch may be applied here: the
// worker knows a ring at least as new, or this broker owns the channel in
// its ring (or, during a migration, in the previous one).
func (o *ownership) owns(ch string, epoch uint64) bool {
	if o == nil || epoch >= o.epoch {
		return true
	}
	return o.cur.Owner(ch) == o.id || o.prev.Owner(ch) == o.id
}

// SetRing tells the router the newest ring from state: id is this broker's
// ring id. Publishes routed by an older ring to a channel it does not own
// are refused from then on (OpError.not_owner), so a worker with a stale
// view learns it instead of reaching only the subscribers left here.
func (s *Server) SetRing(id string, epoch uint64, cur, prev []string) {
	if o := s.owner.Load(); o != nil && epoch < o.epoch {
		return
	}
	s.owner.Store(&ownership{id: id, epoch: epoch, cur: ring.New(cur), prev: ring.New(prev)})
}

// New returns a broker.
func New(cfg Config) *Server {
	if cfg.MaxLinkQueueBytes <= 0 {
		cfg.MaxLinkQueueBytes = 64 << 20
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 512
	}
	if cfg.LinkTimeout <= 0 {
		cfg.LinkTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		m:        newMetrics(cfg.Registerer),
		channels: make(map[string]map[*link]struct{}),
		links:    make(map[*link]struct{}),
	}
}

// Channels returns the number of channels with subscribers.
func (s *Server) Channels() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.channels)
}

// Links returns the number of connected workers.
func (s *Server) Links() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.links)
}

// ackMark holds back an ack until every delivery queued before it has been
// sent, so a worker that sees the ack has seen those deliveries.
type ackMark struct {
	seq uint64
	enq uint64
}

type link struct {
	worker string
	subs   map[string]struct{} // touched only by the receiving goroutine (and cleanup after it)

	mu      sync.Mutex
	queue   []*sccv1.Delivery
	bytes   int
	enq     uint64    // deliveries ever queued
	sent    uint64    // deliveries ever taken for sending
	acks    []ackMark // acks waiting for the deliveries queued before them
	failed  []*sccv1.OpError
	closed  bool
	signal  chan struct{}
	cut     context.CancelFunc
	dropped atomic.Bool
}

var errSlowLink = status.Error(codes.ResourceExhausted, "broker: link queue over its limit")

// Link serves one worker's stream. The handler returns as soon as either
// direction fails or the link is cut; returning ends the stream, which
// unblocks the other goroutine. The link's subscriptions are dropped once
// both goroutines are gone.
func (s *Server) Link(stream sccv1.Broker_LinkServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	l := &link{subs: make(map[string]struct{}), signal: make(chan struct{}, 1), cut: cancel}
	s.mu.Lock()
	s.links[l] = struct{}{}
	s.mu.Unlock()
	s.m.links.Inc()

	var wg sync.WaitGroup
	wg.Add(2)
	failed := make(chan struct{}, 3)
	go func() {
		defer wg.Done()
		if s.sendLoop(ctx, stream, l) != nil {
			failed <- struct{}{}
		}
	}()
	var heard atomic.Int64 // unix nanos of the worker's last message
	heard.Store(time.Now().UnixNano())
	go func() {
		t := time.NewTicker(s.cfg.LinkTimeout / 5)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if time.Since(time.Unix(0, heard.Load())) >= s.cfg.LinkTimeout {
				s.log.Warn("worker link silent: cut", "after", s.cfg.LinkTimeout.String())
				s.m.silentLinks.Inc()
				failed <- struct{}{}
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		_ = grpcx.Guard("broker link receive", func() error {
			for {
				req, err := stream.Recv()
				if err != nil {
					return err
				}
				heard.Store(time.Now().UnixNano())
				if req.WorkerId != "" && l.worker == "" {
					l.worker = req.WorkerId
				}
				s.apply(l, req.Ops)
			}
		})
		failed <- struct{}{}
	}()
	select {
	case <-failed:
	case <-ctx.Done():
	}
	cancel()
	go func() {
		wg.Wait()
		s.drop(l)
	}()
	if l.dropped.Load() {
		return errSlowLink
	}
	return nil
}

// apply runs a batch of operations in order, then queues one ack for all.
func (s *Server) apply(l *link, ops []*sccv1.Op) {
	var last uint64
	var failed []*sccv1.OpError
	for _, op := range ops {
		switch op.Kind {
		case sccv1.OpKind_OP_KIND_SUBSCRIBE:
			if _, ok := l.subs[op.Channel]; !ok {
				l.subs[op.Channel] = struct{}{}
				s.mu.Lock()
				set := s.channels[op.Channel]
				if set == nil {
					set = make(map[*link]struct{})
					s.channels[op.Channel] = set
				}
				set[l] = struct{}{}
				s.mu.Unlock()
			}
		case sccv1.OpKind_OP_KIND_UNSUBSCRIBE:
			if _, ok := l.subs[op.Channel]; ok {
				delete(l.subs, op.Channel)
				s.unsubscribe(op.Channel, l)
			}
		case sccv1.OpKind_OP_KIND_PUBLISH:
			if !s.owner.Load().owns(op.Channel, op.Epoch) {
				s.m.notOwner.Inc()
				failed = append(failed, &sccv1.OpError{Seq: op.Seq, NotOwner: true,
					Message: "broker: channel not owned here at this ring epoch"})
				break
			}
			s.publish(op.Channel, op.Data)
		case sccv1.OpKind_OP_KIND_SYNC:
			// Nothing to apply: its ack, held behind every delivery
			// queued before it, is the answer.
		default:
			if op.Seq != 0 {
				failed = append(failed, &sccv1.OpError{Seq: op.Seq, Message: "broker: unknown operation"})
			}
		}
		if op.Seq > last {
			last = op.Seq
		}
	}
	if last == 0 {
		return
	}
	l.mu.Lock()
	l.acks = append(l.acks, ackMark{seq: last, enq: l.enq})
	l.failed = append(l.failed, failed...)
	l.mu.Unlock()
	l.wake()
}

func (s *Server) unsubscribe(ch string, l *link) {
	s.mu.Lock()
	if set := s.channels[ch]; set != nil {
		delete(set, l)
		if len(set) == 0 {
			delete(s.channels, ch)
		}
	}
	s.mu.Unlock()
}

// publish queues the message once for each subscribed link. The delivery
// is shared: links only read it.
func (s *Server) publish(ch string, data []byte) {
	s.m.publishes.Inc()
	d := &sccv1.Delivery{Channel: ch, Data: data}
	size := len(ch) + len(data) + 8
	s.mu.RLock()
	set := s.channels[ch]
	for l := range set {
		l.enqueue(d, size, s.cfg.MaxLinkQueueBytes)
	}
	n := len(set)
	s.mu.RUnlock()
	s.m.deliveries.Add(float64(n))
}

func (l *link) enqueue(d *sccv1.Delivery, size, limit int) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.queue = append(l.queue, d)
	l.enq++
	l.bytes += size
	if l.bytes > limit {
		l.closed = true
		l.queue, l.bytes = nil, 0
		l.mu.Unlock()
		l.dropped.Store(true)
		l.cut()
		return
	}
	l.mu.Unlock()
	l.wake()
}

func (l *link) wake() {
	select {
	case l.signal <- struct{}{}:
	default:
	}
}

// sendLoop is the only caller of stream.Send for this link.
func (s *Server) sendLoop(ctx context.Context, stream sccv1.Broker_LinkServer, l *link) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.signal:
		}
		for {
			l.mu.Lock()
			// At most MaxBatch deliveries and, beyond the first,
			// grpcx.MaxBatchBytes: a message stays within what the worker
			// accepts whatever the payloads.
			n, size := 0, 0
			for n < len(l.queue) && n < s.cfg.MaxBatch {
				sz := len(l.queue[n].Channel) + len(l.queue[n].Data) + 8
				if n > 0 && size+sz > grpcx.MaxBatchBytes {
					break
				}
				size += sz
				n++
			}
			batch := l.queue[:n:n]
			l.queue = l.queue[n:]
			if len(l.queue) == 0 {
				l.queue = nil
			}
			for _, d := range batch {
				l.bytes -= len(d.Channel) + len(d.Data) + 8
			}
			l.sent += uint64(n)
			var acked uint64
			k := 0
			for k < len(l.acks) && l.acks[k].enq <= l.sent {
				acked = l.acks[k].seq
				k++
			}
			l.acks = l.acks[k:]
			failed := l.failed
			l.failed = nil
			l.mu.Unlock()
			if n == 0 && acked == 0 {
				break
			}
			resp := &sccv1.LinkResponse{Deliveries: batch, Failed: failed, Acked: acked}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	}
}

// drop removes a finished link's subscriptions.
func (s *Server) drop(l *link) {
	l.mu.Lock()
	l.closed = true
	l.queue = nil
	l.mu.Unlock()
	s.mu.Lock()
	delete(s.links, l)
	for ch := range l.subs {
		if set := s.channels[ch]; set != nil {
			delete(set, l)
			if len(set) == 0 {
				delete(s.channels, ch)
			}
		}
	}
	s.mu.Unlock()
	s.m.links.Dec()
	if l.dropped.Load() {
		s.m.slowLinks.Inc()
		s.log.Warn("link cut: worker not keeping up", "worker", l.worker)
	}
}

var _ sccv1.BrokerServer = (*Server)(nil)
