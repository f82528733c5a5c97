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
// Confirmed delivery: a worker that confirms (LinkRequest.confirms) counts
// back the deliveries it has received, and the ack of a publish waits until
// every confirming worker it was delivered to has counted it. When such a
// worker's link ends first (cut, silent, too slow), each publish it had not
// confirmed fails: the publisher hears that some subscribers may have
// missed it, instead of an ack for a delivery that went nowhere.
//
// Lock order: Server.mu, then link.mu; never two links' mu at once.
package broker

import (
	"context"
	"io"
	"log/slog"
	"slices"
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
	// this long (workers send a sync each fifth of a second they have sent
	// nothing else), dropping its subscriptions and its queue: a worker gone
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
	ghosts   map[string]*link  // worker id -> its lost link's subscriptions (ghost.go)
	workers  map[string]uint64 // worker id -> its load, from the last view (nil: none yet)
	lost     map[string]uint64 // worker id -> the newest of its streams here it reports lost (ghost.go)

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
		ghosts:   make(map[string]*link),
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
// sent, so a worker that sees the ack has seen those deliveries, and until
// every confirming link its publishes went to has confirmed them (needs).
type ackMark struct {
	seq   uint64
	enq   uint64
	needs []need
}

// need is a delivery number a confirming link must reach (or end at).
type need struct {
	l   *link
	num uint64
}

// blockedOn is a confirmation the mark still waits for (ok false: none).
// Needs met are dropped as they are found.
func (m *ackMark) blockedOn() (n need, ok bool) {
	for len(m.needs) > 0 {
		n = m.needs[len(m.needs)-1]
		if n.l.recv.Load() < n.num && !n.l.settled.Load() {
			return n, true
		}
		m.needs = m.needs[:len(m.needs)-1]
	}
	return need{}, false
}

// heartbeat is how long a link's sender stays quiet before it sends an
// empty response, so a worker whose acks wait on another worker's
// confirmations still hears from the broker.
const heartbeat = time.Second

type link struct {
	worker   string              // set from the first message, under Server.mu
	num      uint64              // the worker's number for the stream (LinkRequest.link), set with worker
	confirms bool                // set from the first message, before any op
	subs     map[string]struct{} // touched only by the receiving goroutine (and cleanup after it)
	needs    map[*link]uint64    // apply's scratch: what this batch's ack waits for

	mu     sync.Mutex
	queue  []*sccv1.Delivery
	bytes  int       // of deliveries queued, and for a confirming link, sent but not confirmed
	enq    uint64    // deliveries ever queued
	sent   uint64    // deliveries ever taken for sending
	acks   []ackMark // acks waiting for the deliveries queued before them
	failed []*sccv1.OpError
	closed bool
	// A confirming link's deliveries not yet confirmed, in order: the
	// oldest is delivery number base+1.
	unconfirmed origins
	base        uint64
	waiters     []*link // links whose next ack waits for this one's confirmations

	replaces   bool        // it sent REPLACE: its worker sends one on each new link (receiving goroutine)
	clean      atomic.Bool // the worker closed it (CloseSend)
	superseded atomic.Bool // its worker's new link replaced it
	reported   atomic.Bool // its worker reported it lost (cut once)
	ghost      atomic.Bool // ended, its subscriptions held (ghost.go)
	heldSince  time.Time   // when it became one (under Server.mu)

	recv    atomic.Uint64 // deliveries the worker confirmed (changed under mu)
	settled atomic.Bool   // ended, and what it had not confirmed has failed (set under mu)
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
				s.log.Warn("worker link silent: cut", "worker", l.worker, "after", s.cfg.LinkTimeout.String())
				s.m.silentLinks.Inc()
				failed <- struct{}{}
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		_ = grpcx.Guard("broker link receive", func() error {
			first := true
			for {
				req, err := stream.Recv()
				if err != nil {
					if err == io.EOF {
						l.clean.Store(true) // the worker closed it
					}
					return err
				}
				heard.Store(time.Now().UnixNano())
				if first {
					s.mu.Lock() // replace reads other links' worker
					l.worker, l.num = req.WorkerId, req.Link
					lost := s.reportedLostLocked(l)
					s.mu.Unlock()
					if lost { // a view came before the stream's first message
						return errReportedLost
					}
					l.confirms = req.Confirms
					first = false
				}
				s.apply(l, req.Ops)
				if l.confirms {
					l.confirm(req.Received)
				}
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
			if s.publish(l, op.Seq, op.Channel, op.Data) && op.Seq != 0 {
				failed = append(failed, &sccv1.OpError{Seq: op.Seq, Message: errGhost})
			}
		case sccv1.OpKind_OP_KIND_SYNC:
			// Nothing to apply: its ack, held behind every delivery
			// queued before it, is the answer.
		case sccv1.OpKind_OP_KIND_REPLACE:
			l.replaces = true
			s.replace(l)
		default:
			if op.Seq != 0 {
				failed = append(failed, &sccv1.OpError{Seq: op.Seq, Message: "broker: unknown operation"})
			}
		}
		if op.Seq > last {
			last = op.Seq
		}
	}
	var needs []need
	if len(l.needs) > 0 {
		needs = make([]need, 0, len(l.needs))
		for x, num := range l.needs {
			needs = append(needs, need{x, num})
		}
		clear(l.needs)
	}
	if last == 0 {
		return
	}
	l.mu.Lock()
	l.acks = append(l.acks, ackMark{seq: last, enq: l.enq, needs: needs})
	l.failed = append(l.failed, failed...)
	l.mu.Unlock()
	l.wake()
}

// unsubscribeAllLocked takes l out of every channel it is subscribed to.
func (s *Server) unsubscribeAllLocked(l *link) {
	for ch := range l.subs {
		if set := s.channels[ch]; set != nil {
			delete(set, l)
			if len(set) == 0 {
				delete(s.channels, ch)
			}
		}
	}
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

// publish queues the message once for each subscribed link (the delivery
// is shared: links only read it) and notes, for the ack of the batch it
// came in (seq on link from), the delivery number each other confirming
// link must confirm. It reports whether a lost link's held
// subscriptions (ghost.go) are among the channel's: the publish must fail.
func (s *Server) publish(from *link, seq uint64, ch string, data []byte) (ghosted bool) {
	s.m.publishes.Inc()
	d := &sccv1.Delivery{Channel: ch, Data: data}
	size := len(ch) + len(data) + 8
	s.mu.RLock()
	set := s.channels[ch]
	for l := range set {
		if l.ghost.Load() {
			ghosted = true
			continue
		}
		// The publisher's own link needs no confirmation: its ack follows
		// the delivery on the same stream, and if the stream breaks first
		// the worker fails the publish itself.
		if num := l.enqueue(d, size, s.cfg.MaxLinkQueueBytes, from, seq); num != 0 && seq != 0 && l != from {
			if from.needs == nil {
				from.needs = make(map[*link]uint64)
			}
			from.needs[l] = num
		}
	}
	n := len(set)
	s.mu.RUnlock()
	s.m.deliveries.Add(float64(n))
	if ghosted {
		s.m.unreachable.Inc()
	}
	return ghosted
}

// enqueue queues a delivery; for a confirming link it returns the
// delivery's number, which the link must confirm (or end at, failing it).
func (l *link) enqueue(d *sccv1.Delivery, size, limit int, from *link, seq uint64) uint64 {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0
	}
	l.queue = append(l.queue, d)
	l.enq++
	l.bytes += size
	num := uint64(0)
	if l.confirms {
		l.unconfirmed.push(origin{from: from, seq: seq, size: size})
		num = l.enq
	}
	if l.bytes > limit {
		// Cut: drop fails every publish whose delivery it had not
		// confirmed, this one included.
		l.closed = true
		l.queue = nil
		l.mu.Unlock()
		l.dropped.Store(true)
		l.cut()
		return num
	}
	l.mu.Unlock()
	l.wake()
	return num
}

// confirm takes the worker's count of deliveries received: their
// publishes no longer wait for this link.
func (l *link) confirm(received uint64) {
	l.mu.Lock()
	received = min(received, l.sent) // nothing unsent can have arrived
	if received <= l.base {
		l.mu.Unlock()
		return
	}
	k := min(received-l.base, uint64(l.unconfirmed.len()))
	l.bytes -= l.unconfirmed.pop(int(k))
	l.base = received
	l.recv.Store(received)
	l.unlockAndWake()
}

// unlockAndWake releases l.mu (held by the caller) and wakes the links
// whose acks were waiting on this one.
func (l *link) unlockAndWake() {
	waiters := l.waiters
	l.waiters = nil
	l.mu.Unlock()
	for _, w := range waiters {
		w.wake()
	}
}

// await registers w to be woken when this link confirms up to num or ends;
// it reports true when that has already happened.
func (l *link) await(w *link, num uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.recv.Load() >= num || l.settled.Load() {
		return true
	}
	if !slices.Contains(l.waiters, w) {
		l.waiters = append(l.waiters, w)
	}
	return false
}

// fail records that the publish seq on this link failed; it goes out with
// the ack that covers it.
func (l *link) fail(seq uint64, msg string) {
	l.mu.Lock()
	l.failed = append(l.failed, &sccv1.OpError{Seq: seq, Message: msg})
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
	t := time.NewTicker(heartbeat)
	defer t.Stop()
	lastSend := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.signal:
		case <-t.C:
			if time.Since(lastSend) >= heartbeat {
				if err := stream.Send(&sccv1.LinkResponse{}); err != nil {
					return err
				}
				lastSend = time.Now()
			}
			continue
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
			if !l.confirms { // a confirming link counts them until confirmed
				for _, d := range batch {
					l.bytes -= len(d.Channel) + len(d.Data) + 8
				}
			}
			l.sent += uint64(n)
			var acked uint64
			var blocked need
			var isBlocked bool
			k := 0
			for k < len(l.acks) && l.acks[k].enq <= l.sent {
				if blocked, isBlocked = l.acks[k].blockedOn(); isBlocked {
					break
				}
				acked = l.acks[k].seq
				k++
			}
			l.acks = l.acks[k:]
			var failed []*sccv1.OpError
			if acked != 0 {
				failed = l.takeFailed(acked)
			}
			l.mu.Unlock()
			if n == 0 && acked == 0 {
				if isBlocked && blocked.l.await(l, blocked.num) {
					continue // confirmed meanwhile
				}
				break
			}
			resp := &sccv1.LinkResponse{Deliveries: batch, Failed: failed, Acked: acked}
			if err := stream.Send(resp); err != nil {
				return err
			}
			lastSend = time.Now()
		}
	}
}

// takeFailed removes and returns the failures of operations up to acked
// (a failure can be recorded before its batch's ack is queued). The
// caller holds l.mu.
func (l *link) takeFailed(acked uint64) []*sccv1.OpError {
	var out []*sccv1.OpError
	keep := l.failed[:0]
	for _, f := range l.failed {
		if f.Seq <= acked {
			out = append(out, f)
		} else {
			keep = append(keep, f)
		}
	}
	clear(l.failed[len(keep):])
	l.failed = keep
	return out
}

// errUnconfirmed fails a publish whose delivery a worker never confirmed.
const errUnconfirmed = "broker: a subscribed worker's link ended before it confirmed the delivery"

// drop removes a finished link's subscriptions (or holds them, ghost.go)
// and fails every publish whose delivery it had not confirmed.
func (s *Server) drop(l *link) {
	// Held or removed first: from then on a publish either fails on the
	// ghost or does not count on this link; until then it is queued here
	// and fails below with the rest.
	s.mu.Lock()
	delete(s.links, l)
	if !s.keepLocked(l) {
		s.unsubscribeAllLocked(l)
	}
	s.mu.Unlock()
	l.mu.Lock()
	l.closed = true
	l.queue = nil
	unconfirmed := l.unconfirmed.take()
	l.mu.Unlock()
	for _, o := range unconfirmed {
		if o.seq != 0 {
			o.from.fail(o.seq, errUnconfirmed)
		}
	}
	if len(unconfirmed) > 0 {
		s.m.unconfirmed.Add(float64(len(unconfirmed)))
	}
	l.mu.Lock()
	l.settled.Store(true)
	l.unlockAndWake()
	s.m.links.Dec()
	if l.dropped.Load() {
		s.m.slowLinks.Inc()
		s.log.Warn("link cut: worker not keeping up", "worker", l.worker)
	}
}

var _ sccv1.BrokerServer = (*Server)(nil)
