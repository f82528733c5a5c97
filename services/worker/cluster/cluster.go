// Package cluster is the worker's gRPC implementation of worker.Broker: it
// joins the state service, keeps one Link stream per broker of the ring,
// routes each channel to its owner by rendezvous hashing, and takes part
// in ring migrations so channels move between brokers with nothing lost
// and nothing doubled:
//
//   - subscribe-both: every channel with local subscribers is subscribed
//     on its new owner too; the worker acks once all are confirmed;
//   - publish-new: publishes go to the new owner; the worker acks once
//     every publish it sent to an old owner has been acknowledged;
//   - release-old: the old subscriptions are dropped; the worker acks.
//
// Whatever arrives for a channel from any broker goes to its local
// subscribers. Publishes whose owner is unreachable (a broker that crashed)
// wait in a bounded buffer and go to the owner of the next view.
//
// Lock order: Cluster.mu, then link.mu. Link callbacks that take
// Cluster.mu run without link.mu held.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scc-k8s/scc/pkg/grpcx"
	"github.com/scc-k8s/scc/pkg/member"
	"github.com/scc-k8s/scc/pkg/ring"
	"github.com/scc-k8s/scc/proto/sccv1"
	"github.com/scc-k8s/scc/services/worker"
)

// Config configures a worker's cluster connection.
type Config struct {
	// ID names the worker in the cluster. Required.
	ID string
	// StateAddr is the state service's address. Required.
	StateAddr string
	// Advertise is the worker's client-facing address (the gateway routes
	// to it).
	Advertise string
	// GRPC carries the cluster token and TLS.
	GRPC grpcx.Config
	// MaxBuffered bounds the publishes held while their owner is
	// unreachable; beyond it a publish fails. Default 100000.
	MaxBuffered int
	// MaxLinkQueueBytes bounds the publishes queued on one broker link and
	// not yet sent; beyond it a publish fails at once with ErrLinkFull
	// (its publisher gets a BrokerError) instead of the queue growing
	// without limit. Default 64 MiB.
	MaxLinkQueueBytes int
	// BufferTimeout fails a held publish not sent within it. Default 5s:
	// its publisher hears of it before the client's own ack timeout (10 s
	// in SocketCluster's clients) gives up on it.
	BufferTimeout time.Duration
	// LinkTimeout declares a broker link dead when nothing has come back
	// on it for this long although the worker asked (it sends a sync each
	// second the link is quiet): a broker that went silent (paused, or the
	// network between cut without a reset) is noticed in seconds, not at
	// gRPC's keepalive (10 s at least, then its timeout). Its operations
	// in flight fail, the worker reports itself unready and dials the
	// broker afresh. Default 3s.
	LinkTimeout time.Duration
	// PartitionAfter is how long a link to a broker still in the ring may
	// stay down before the worker hands its clients to the others
	// (OnPartition; see partition.go). Default 600ms, counted from when
	// the link went down (a silent one: after LinkTimeout). It is a
	// margin: a broker that stops is lost by every worker within 200 ms
	// of each other (link.go's watch) and each reports itself unready
	// within 50 ms of that: a worker that sees another that has been
	// ready for the margin is cut off from that broker alone. With the
	// defaults a silent cut is noticed 3-3.2 s after it began and the
	// handover starts by 3.8 s, before the broker gives up on this
	// worker (its link timeout, 5 s): what the broker acknowledges
	// meanwhile either reached this worker (confirmed) or failed its
	// publisher.
	PartitionAfter time.Duration
	// OnPartition, when set, is called (once per episode) when this worker
	// is cut off from a broker the other workers reach: the worker closes
	// its clients at its drain pace, and they reconnect elsewhere.
	OnPartition func()
	// Load reports the worker's load (open sockets) in heartbeats.
	Load func() uint64
	// Ready, when set, must hold too for the worker to report itself ready
	// to state (gateways route only to ready workers): the worker serves
	// and is not draining.
	Ready func() bool
	// OnGatewayDrain, when set, is called (on the view goroutine; it must
	// not block) once for each gateway the view first shows draining: the
	// worker closes the sockets that gateway brought, at its drain pace.
	OnGatewayDrain func(gatewayID string)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives metrics (default: none).
	Registerer prometheus.Registerer
}

// ErrTooBig fails a publish whose payload cannot fit one gRPC message
// between components (grpcx.MaxMessageBytes).
var ErrTooBig = errors.New("cluster: message too big for the cluster")

// ErrNotOwner fails a publish that brokers kept refusing, for
// Config.BufferTimeout, because this worker routed it by a ring older than
// theirs: the worker has lost track of the cluster (state unreachable).
var ErrNotOwner = errors.New("cluster: publish refused: this worker's ring is out of date")

// rerouteAfter spaces the attempts of a publish refused for a stale ring:
// the view that fixes the routing is usually on its way.
const rerouteAfter = 20 * time.Millisecond

// ErrLinkFull fails a publish when the link to its broker has
// Config.MaxLinkQueueBytes queued already (the broker or the network is
// not keeping up).
var ErrLinkFull = errors.New("cluster: the broker link's queue is full")

// ErrBufferFull fails a publish that cannot be held for a missing broker.
var ErrBufferFull = errors.New("cluster: publish buffer full while a broker is unreachable")

// ErrBufferTimeout fails a publish that waited too long for a broker.
var ErrBufferTimeout = errors.New("cluster: no broker for the channel in time")

// Cluster implements worker.Broker over gRPC.
type Cluster struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	deliver worker.DeliverFunc
	mem     *member.Client

	mu       sync.Mutex
	epoch    uint64
	phase    sccv1.Phase
	cur      *ring.Ring
	prev     *ring.Ring
	view     *sccv1.View
	links    map[string]*link
	channels map[string]*chanState
	buffer   []heldPublish
	gen      uint64 // bumps with every applied view
	closed   bool
	changed  chan struct{}

	latest chan *sccv1.ClusterView
	// gwDraining are the gateways seen draining; only onView touches it.
	gwDraining map[string]bool
	peers      peers
	stop       chan struct{}
	applied    sync.WaitGroup
}

type chanState struct {
	on      map[string]bool // broker id -> subscription confirmed
	waiters []func(error)
}

type heldPublish struct {
	channel string
	data    []byte
	done    func(error)
	since   time.Time
}

var _ worker.Broker = (*Cluster)(nil)

// Factory returns a worker.BrokerFactory that connects to the cluster.
func Factory(cfg Config) worker.BrokerFactory {
	return func(deliver worker.DeliverFunc) (worker.Broker, error) { return New(cfg, deliver) }
}

// New joins the cluster.
func New(cfg Config, deliver worker.DeliverFunc) (*Cluster, error) {
	if cfg.ID == "" || cfg.StateAddr == "" {
		return nil, fmt.Errorf("cluster: worker id and state address are required")
	}
	if cfg.MaxLinkQueueBytes <= 0 {
		cfg.MaxLinkQueueBytes = 64 << 20
	}
	if cfg.MaxBuffered <= 0 {
		cfg.MaxBuffered = 100000
	}
	if cfg.BufferTimeout <= 0 {
		cfg.BufferTimeout = 5 * time.Second
	}
	if cfg.LinkTimeout <= 0 {
		cfg.LinkTimeout = 3 * time.Second
	}
	if cfg.PartitionAfter <= 0 {
		cfg.PartitionAfter = 600 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Cluster{
		cfg:      cfg,
		log:      cfg.Logger.With("worker", cfg.ID),
		m:        newMetrics(cfg.Registerer),
		deliver:  deliver,
		cur:      ring.New(nil),
		prev:     ring.New(nil),
		view:     &sccv1.View{},
		links:    make(map[string]*link),
		channels: make(map[string]*chanState),
		changed:  make(chan struct{}, 1),
		latest:   make(chan *sccv1.ClusterView, 1),
		stop:     make(chan struct{}),
	}
	c.applied.Add(1)
	go c.applyLoop()
	if cfg.OnPartition != nil {
		c.applied.Add(1)
		go c.watchPartition()
	}
	mem, err := member.Start(member.Config{
		StateAddr: cfg.StateAddr,
		GRPC:      cfg.GRPC,
		Member:    &sccv1.Member{Id: cfg.ID, Role: sccv1.Role_ROLE_WORKER, Address: cfg.Advertise},
		View:      c.currentView,
		Load:      cfg.Load,
		Ready: func() bool {
			return c.Ready() && (cfg.Ready == nil || cfg.Ready())
		},
		LostLinks: c.lostLinks,
		OnView:    c.onView,
		Logger:    c.log,
	})
	if err != nil {
		close(c.stop)
		c.applied.Wait()
		return nil, err
	}
	c.mem = mem
	return c, nil
}

// Ready reports whether the worker has a ring and a live link to every
// broker of it.
func (c *Cluster) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.epoch == 0 || c.cur.Len() == 0 {
		return false
	}
	for _, id := range c.cur.IDs() {
		if l := c.links[id]; l == nil || !l.isUp() {
			return false
		}
	}
	return true
}

// lostLinks lists the brokers whose stream from this worker ended and has
// not been replaced by a newer one, for state to pass on to the brokers
// (Member.lost_links).
func (c *Cluster) lostLinks() []*sccv1.LostLink {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*sccv1.LostLink
	for id, l := range c.links {
		if n := l.lost.Load(); n != 0 {
			out = append(out, &sccv1.LostLink{BrokerId: id, Link: n})
		}
	}
	slices.SortFunc(out, func(a, b *sccv1.LostLink) int { return strings.Compare(a.BrokerId, b.BrokerId) })
	return out
}

// Epoch returns the applied ring epoch and phase.
func (c *Cluster) Epoch() (uint64, sccv1.Phase) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch, c.phase
}

func (c *Cluster) currentView() *sccv1.View {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.view
}

func (c *Cluster) onView(v *sccv1.ClusterView) {
	c.peers.set(v)
	if c.cfg.OnGatewayDrain != nil {
		for _, g := range v.Gateways {
			if g.Draining && !c.gwDraining[g.Id] {
				if c.gwDraining == nil {
					c.gwDraining = make(map[string]bool)
				}
				c.gwDraining[g.Id] = true
				c.cfg.OnGatewayDrain(g.Id)
			}
		}
		for id := range c.gwDraining { // gone: forget it
			if !slices.ContainsFunc(v.Gateways, func(g *sccv1.Member) bool { return g.Id == id }) {
				delete(c.gwDraining, id)
			}
		}
	}
	select {
	case <-c.latest:
	default:
	}
	c.latest <- v
}

func (c *Cluster) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// applyLoop applies views in order (the newest wins) and acks phases.
func (c *Cluster) applyLoop() {
	defer c.applied.Done()
	var ackFor struct {
		epoch uint64
		phase sccv1.Phase
		gen   uint64
		cond  func() bool
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case v := <-c.latest:
			gen, cond, ok := c.apply(v)
			if ok {
				ackFor.epoch, ackFor.phase, ackFor.gen, ackFor.cond = v.Epoch, v.Phase, gen, cond
			}
		case <-c.changed:
		case <-tick.C:
			c.expireBuffer()
		}
		if ackFor.cond == nil {
			continue
		}
		c.mu.Lock()
		stale := c.gen != ackFor.gen
		c.mu.Unlock()
		if stale {
			ackFor.cond = nil
			continue
		}
		if ackFor.cond() {
			if c.mem.Ack(ackFor.epoch, ackFor.phase) {
				c.log.Debug("phase acked", "epoch", ackFor.epoch, "phase", ackFor.phase.String())
				ackFor.cond = nil
			}
		}
	}
}

// apply installs a view and returns the condition under which its phase
// is done (nil for nothing to ack).
func (c *Cluster) apply(v *sccv1.ClusterView) (uint64, func() bool, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || v.Settling || v.Epoch < c.epoch || (v.Epoch == c.epoch && phaseOrder(v.Phase) < phaseOrder(c.phase)) {
		return 0, nil, false // older than what we applied
	}
	c.epoch, c.phase = v.Epoch, v.Phase
	c.view = &sccv1.View{Epoch: v.Epoch, Phase: v.Phase, Brokers: v.Brokers, PrevBrokers: v.PrevBrokers}
	addrs := make(map[string]string)
	var curIDs, prevIDs []string
	for _, b := range v.Brokers {
		addrs[b.Id] = b.Address
		curIDs = append(curIDs, b.Id)
	}
	for _, b := range v.PrevBrokers {
		addrs[b.Id] = b.Address
		prevIDs = append(prevIDs, b.Id)
	}
	c.cur, c.prev = ring.New(curIDs), ring.New(prevIDs)
	c.m.epoch.Set(float64(v.Epoch))
	// Links: one per broker of either ring.
	for id, l := range c.links {
		if addrs[id] != l.addr {
			delete(c.links, id)
			go l.close()
			for _, cs := range c.channels {
				delete(cs.on, id)
			}
		}
	}
	for id, addr := range addrs {
		if c.links[id] == nil {
			l, err := newLink(c, id, addr)
			if err != nil {
				c.log.Error("cannot dial broker", "broker", id, "addr", addr, "err", err)
				continue
			}
			c.links[id] = l
		}
	}
	for ch, cs := range c.channels {
		c.syncLocked(ch, cs)
	}
	c.flushLocked()
	c.gen++

	gen := c.gen
	switch v.Phase {
	case sccv1.Phase_PHASE_SUBSCRIBE_BOTH:
		return gen, c.allConfirmed, true
	case sccv1.Phase_PHASE_PUBLISH_NEW:
		// Ack once the old owners have acked every publish sent to them.
		settled := c.settledLocked(prevIDs, (*link).lastPublish)
		return gen, func() bool {
			if !settled() {
				return false
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			return len(c.buffer) == 0 || c.cur.Len() == 0
		}, true
	case sccv1.Phase_PHASE_RELEASE_OLD:
		// Ack once every old owner has acked the unsubscribes just queued:
		// a broker acks only after sending every delivery it queued before,
		// so nothing an old owner accepted (and acked to its publisher) is
		// still on its way here when the link to it is closed.
		return gen, c.settledLocked(prevIDs, (*link).lastOp), true
	}
	return gen, nil, false
}

// settledLocked returns a check that holds once each of the brokers' links
// has had every operation up to mark(link), taken now, acknowledged (or
// has gone down).
func (c *Cluster) settledLocked(ids []string, mark func(*link) uint64) func() bool {
	marks := make(map[*link]uint64)
	for _, id := range ids {
		if l := c.links[id]; l != nil {
			marks[l] = mark(l)
		}
	}
	return func() bool {
		for l, m := range marks {
			if !l.settledUpTo(m) {
				return false
			}
		}
		return true
	}
}

// phaseOrder sorts the phases of one epoch: a migration ends stable.
func phaseOrder(p sccv1.Phase) int {
	if p == sccv1.Phase_PHASE_STABLE {
		return 4
	}
	return int(p)
}

// wanted returns the brokers a channel must be subscribed on now.
func (c *Cluster) wantedLocked(ch string) (string, string) {
	owner := c.cur.Owner(ch)
	old := ""
	if c.phase == sccv1.Phase_PHASE_SUBSCRIBE_BOTH || c.phase == sccv1.Phase_PHASE_PUBLISH_NEW {
		if o := c.prev.Owner(ch); o != owner {
			old = o
		}
	}
	return owner, old
}

// route returns the broker that takes publishes for ch now.
func (c *Cluster) routeLocked(ch string) string {
	if c.phase == sccv1.Phase_PHASE_SUBSCRIBE_BOTH && c.prev.Len() > 0 {
		return c.prev.Owner(ch)
	}
	return c.cur.Owner(ch)
}

// syncLocked makes a channel's subscriptions match the view: subscribe
// where wanted and missing, drop where no longer wanted.
func (c *Cluster) syncLocked(ch string, cs *chanState) {
	owner, old := c.wantedLocked(ch)
	for id := range cs.on {
		if id != owner && id != old {
			if l := c.links[id]; l != nil {
				l.queue(sccv1.OpKind_OP_KIND_UNSUBSCRIBE, ch, nil, nil, time.Time{})
			}
			delete(cs.on, id)
		}
	}
	for _, id := range []string{owner, old} {
		if id == "" {
			continue
		}
		if _, ok := cs.on[id]; ok {
			continue
		}
		l := c.links[id]
		if l == nil {
			continue
		}
		brokerID := id
		if l.queue(sccv1.OpKind_OP_KIND_SUBSCRIBE, ch, nil, func(err error) { c.confirmed(ch, brokerID, err) }, time.Time{}) {
			cs.on[id] = false
		}
	}
	c.finishWaitersLocked(ch, cs)
}

func (c *Cluster) confirmed(ch, brokerID string, err error) {
	c.mu.Lock()
	cs := c.channels[ch]
	if cs != nil {
		if _, ok := cs.on[brokerID]; ok {
			if err != nil {
				delete(cs.on, brokerID) // resubscribed when the link is back
			} else {
				cs.on[brokerID] = true
			}
		}
		c.finishWaitersLocked(ch, cs)
	}
	c.mu.Unlock()
	c.notify()
}

// finishWaitersLocked answers the worker's subscribe calls once every
// wanted broker confirmed.
func (c *Cluster) finishWaitersLocked(ch string, cs *chanState) {
	if len(cs.waiters) == 0 || !c.confirmedLocked(ch, cs) {
		return
	}
	waiters := cs.waiters
	cs.waiters = nil
	go func() {
		for _, w := range waiters {
			w(nil)
		}
	}()
}

func (c *Cluster) confirmedLocked(ch string, cs *chanState) bool {
	owner, old := c.wantedLocked(ch)
	if owner == "" {
		// No broker at all: nothing to subscribe on, nothing to wait for
		// (publishes are held until a broker comes).
		return c.cur.Len() == 0
	}
	if !cs.on[owner] {
		return false
	}
	// The old owner matters only while it lives: a crashed one cannot
	// confirm, and nobody can publish through it any more.
	if old != "" && !cs.on[old] {
		if l := c.links[old]; l != nil && l.isUp() {
			return false
		}
	}
	return true
}

func (c *Cluster) allConfirmed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch, cs := range c.channels {
		if !c.confirmedLocked(ch, cs) {
			return false
		}
	}
	return true
}

// Subscribe implements worker.Broker.
func (c *Cluster) Subscribe(ch string, done func(error)) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		done(worker.ErrBrokerClosed)
		return
	}
	cs := c.channels[ch]
	if cs == nil {
		cs = &chanState{on: make(map[string]bool)}
		c.channels[ch] = cs
		c.m.channels.Inc()
	}
	cs.waiters = append(cs.waiters, done)
	c.syncLocked(ch, cs)
	c.mu.Unlock()
}

// Unsubscribe implements worker.Broker.
func (c *Cluster) Unsubscribe(ch string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := c.channels[ch]
	if cs == nil {
		return
	}
	delete(c.channels, ch)
	c.m.channels.Dec()
	for id := range cs.on {
		if l := c.links[id]; l != nil {
			l.queue(sccv1.OpKind_OP_KIND_UNSUBSCRIBE, ch, nil, nil, time.Time{})
		}
	}
	for _, w := range cs.waiters {
		go w(errors.New("cluster: unsubscribed"))
	}
}

// Publish implements worker.Broker.
func (c *Cluster) Publish(ch string, data json.RawMessage, done func(error)) {
	if len(ch)+len(data) > grpcx.MaxMessageBytes-grpcx.MessageOverhead {
		if done != nil {
			done(ErrTooBig)
		}
		return
	}
	c.publish(ch, data, done, time.Now())
}

// publish sends to the channel's owner, or holds the publish while it has
// none reachable; since is when it was first published.
func (c *Cluster) publish(ch string, data []byte, done func(error), since time.Time) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		if done != nil {
			done(worker.ErrBrokerClosed)
		}
		return
	}
	if !c.sendLocked(ch, data, done, since) {
		if len(c.buffer) >= c.cfg.MaxBuffered {
			c.mu.Unlock()
			c.m.bufferFull.Inc()
			if done != nil {
				done(ErrBufferFull)
			}
			return
		}
		c.buffer = append(c.buffer, heldPublish{channel: ch, data: data, done: done, since: since})
		c.m.buffered.Inc()
	}
	c.mu.Unlock()
}

// sendLocked queues a publish on the link to its owner; since is when it
// was first published (it bounds how long a refused publish is re-routed).
func (c *Cluster) sendLocked(ch string, data []byte, done func(error), since time.Time) bool {
	target := c.routeLocked(ch)
	if target == "" {
		return false
	}
	l := c.links[target]
	if l == nil {
		return false
	}
	return l.queue(sccv1.OpKind_OP_KIND_PUBLISH, ch, data, done, since)
}

// reroute sends again a publish a broker refused (not its owner at its
// newer epoch), after a pause, until Config.BufferTimeout from its first
// attempt; then it fails with ErrNotOwner.
func (c *Cluster) reroute(ch string, data []byte, done func(error), since time.Time) {
	if time.Since(since) >= c.cfg.BufferTimeout {
		c.m.notOwner.Inc()
		if done != nil {
			done(ErrNotOwner)
		}
		return
	}
	time.AfterFunc(rerouteAfter, func() { c.publish(ch, data, done, since) })
}

// flushLocked sends held publishes whose owner is reachable now.
func (c *Cluster) flushLocked() {
	if len(c.buffer) == 0 {
		return
	}
	kept := c.buffer[:0]
	resent := 0
	for _, p := range c.buffer {
		if c.sendLocked(p.channel, p.data, p.done, p.since) {
			resent++
			continue
		}
		kept = append(kept, p)
	}
	clear(c.buffer[len(kept):])
	c.buffer = kept
	if resent > 0 {
		c.m.resent.Add(float64(resent))
		c.log.Info("held publishes sent", "count", resent, "still_held", len(kept))
	}
}

func (c *Cluster) expireBuffer() {
	c.mu.Lock()
	if len(c.buffer) == 0 {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	var expired []heldPublish
	kept := c.buffer[:0]
	for _, p := range c.buffer {
		if now.Sub(p.since) > c.cfg.BufferTimeout {
			expired = append(expired, p)
			continue
		}
		kept = append(kept, p)
	}
	clear(c.buffer[len(kept):])
	c.buffer = kept
	c.mu.Unlock()
	for _, p := range expired {
		if p.done != nil {
			p.done(ErrBufferTimeout)
		}
	}
}

// linkUp resubscribes the link's channels and sends what was held for it.
func (c *Cluster) linkUp(l *link) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.links[l.id] != l {
		return
	}
	for ch, cs := range c.channels {
		delete(cs.on, l.id)
		c.syncLocked(ch, cs)
	}
	c.flushLocked()
	c.m.linksUp.Inc()
}

// linkDown forgets the link's subscriptions (the broker dropped them).
func (c *Cluster) linkDown(l *link) {
	c.mu.Lock()
	if c.links[l.id] == l {
		for _, cs := range c.channels {
			delete(cs.on, l.id)
		}
	}
	c.mu.Unlock()
	c.m.linksUp.Dec()
	c.notify()
}

// Drain tells state that this worker is leaving: gateways stop routing
// new connections to it at once. The worker stays in the cluster (its
// subscriptions and publishes work as before) until Close.
func (c *Cluster) Drain() { c.mem.Drain() }

// Sync returns once every message the brokers applied before it was
// called has been handed to the worker's deliver function: a sync
// operation goes down every live link, and each broker acks it only after
// the deliveries it queued before it. A draining worker syncs before it
// closes sockets, so a socket's close comes after everything published
// before the close was decided.
func (c *Cluster) Sync(ctx context.Context) error {
	c.mu.Lock()
	var wg sync.WaitGroup
	errs := make(chan error, len(c.links))
	for _, l := range c.links {
		wg.Add(1)
		if !l.queue(sccv1.OpKind_OP_KIND_SYNC, "", nil, func(err error) { errs <- err; wg.Done() }, time.Time{}) {
			wg.Done() // down: nothing of it can arrive any more
		}
	}
	c.mu.Unlock()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Close leaves the cluster.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	links := c.links
	c.links = map[string]*link{}
	buffer := c.buffer
	c.buffer = nil
	c.mu.Unlock()
	c.mem.Close()
	close(c.stop)
	c.applied.Wait()
	for _, l := range links {
		l.close()
	}
	for _, p := range buffer {
		if p.done != nil {
			p.done(worker.ErrBrokerClosed)
		}
	}
	return nil
}
