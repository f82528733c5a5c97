package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/scc-k8s/scc/pkg/grpcx"
	"github.com/scc-k8s/scc/proto/sccv1"
)

// maxOpsPerMessage caps one LinkRequest.
const maxOpsPerMessage = 1024

// errLinkLost fails operations in flight on a stream that broke: the
// broker may or may not have applied them.
var errLinkLost = errors.New("cluster: broker link lost")

// errLinkSilent ends a session on which nothing came back for
// Config.LinkTimeout although the worker asked.
var errLinkSilent = errors.New("cluster: broker link silent")

// link is the worker's stream to one broker. One goroutine owns Send and
// one owns Recv; operations queue in between and go out in batches (all
// that accumulated while the previous Send ran, so an idle link sends at
// once and a busy one batches).
type link struct {
	c    *Cluster
	id   string
	addr string
	conn *grpc.ClientConn

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	ops     []*sccv1.Op
	bytes   int // of the publishes in ops
	signal  chan struct{}
	seq     uint64 // last seq assigned
	acked   uint64 // highest seq acknowledged
	lastPub uint64 // seq of the last publish queued
	pending []pendingOp
	up      bool
	downAt  time.Time // when the last stream ended (zero: none has)

	// received counts the deliveries the current stream has brought (each
	// handed to the hub); the sender reports it back, and the broker holds
	// a publish's ack until every worker it went to has counted it.
	received atomic.Uint64
	// confirmArmed: a timer will wake the sender to report received alone
	// if no batch of operations has carried it by then.
	confirmArmed atomic.Bool

	// lost is the number (LinkRequest.link) of the last stream that ended
	// while no newer one has come up since (0: none), reported to state
	// (Member.lost_links) so that the broker need not wait for its own
	// timeout to give that stream up.
	lost atomic.Uint64
}

// streamNumbers numbers the worker's streams to brokers, all brokers
// alike: a number is never used twice, even by a link to a broker that
// left the ring and came back, and it starts from the clock so that a
// restarted worker's numbers are higher than its previous life's.
var streamNumbers atomic.Uint64

func init() { streamNumbers.Store(uint64(time.Now().UnixNano())) }

// confirmDelay is how long a count of deliveries received may wait to ride
// on a batch of operations before it is sent alone: under load it rides
// (no message of its own), idle it costs acks this much latency.
const confirmDelay = time.Millisecond

type pendingOp struct {
	seq     uint64
	publish bool
	done    func(error)
	// A publish keeps what it needs to be routed again (OpError.not_owner).
	channel string
	data    []byte
	since   time.Time
}

func newLink(c *Cluster, id, addr string) (*link, error) {
	conn, err := grpcx.Dial(addr, c.cfg.GRPC)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &link{c: c, id: id, addr: addr, conn: conn, ctx: ctx, cancel: cancel,
		done: make(chan struct{}), signal: make(chan struct{}, 1)}
	go l.run()
	return l, nil
}

func (l *link) close() {
	l.cancel()
	<-l.done
	l.conn.Close()
}

func (l *link) isUp() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.up
}

// wentDown is when the link's last stream ended, if it is down and one
// has (zero otherwise).
func (l *link) wentDown() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.up {
		return time.Time{}
	}
	return l.downAt
}

// queue adds an operation; done (for subscribe and publish) gets the
// broker's ack. It reports false when the link is down. A publish that
// would take the queue past Config.MaxLinkQueueBytes fails at once with
// ErrLinkFull (and counts as handled).
func (l *link) queue(kind sccv1.OpKind, ch string, data []byte, done func(error), since time.Time) bool {
	l.mu.Lock()
	if !l.up {
		l.mu.Unlock()
		return false
	}
	if kind == sccv1.OpKind_OP_KIND_PUBLISH {
		size := opSize(ch, data)
		if l.bytes > 0 && l.bytes+size > l.c.cfg.MaxLinkQueueBytes {
			l.mu.Unlock()
			l.c.m.linkFull.Inc()
			if done != nil {
				done(ErrLinkFull)
			}
			return true
		}
		l.bytes += size
	}
	// Every operation is numbered, unsubscribes too: the broker's ack of
	// one comes after every delivery it queued before it, which is how
	// release-old knows an old owner has nothing left on its way here.
	l.seq++
	op := &sccv1.Op{Kind: kind, Channel: ch, Data: data, Seq: l.seq}
	p := pendingOp{seq: l.seq, done: done}
	if kind == sccv1.OpKind_OP_KIND_PUBLISH {
		l.lastPub = l.seq
		op.Epoch = l.c.epoch // the caller holds c.mu
		p.publish, p.channel, p.data, p.since = true, ch, data, since
	}
	l.pending = append(l.pending, p)
	l.ops = append(l.ops, op)
	depth := len(l.ops)
	l.mu.Unlock()
	l.c.m.queueDepth.WithLabelValues(l.id).Set(float64(depth))
	l.wake()
	return true
}

// settledUpTo reports whether every operation queued up to mark has
// been acknowledged (or failed with the stream).
func (l *link) settledUpTo(mark uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.up || l.acked >= mark
}

// lastOp is the seq of the last operation queued.
func (l *link) lastOp() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq
}

func (l *link) lastPublish() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastPub
}

func (l *link) run() {
	defer close(l.done)
	backoff := 20 * time.Millisecond
	for l.ctx.Err() == nil {
		start := time.Now()
		err := l.session()
		if l.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errLinkSilent) {
			// The connection under the stream is as dead as the stream:
			// a new stream on it would hang the same way.
			l.c.log.Warn("broker link silent: dialling again", "broker", l.id, "after", l.c.cfg.LinkTimeout.String())
			if conn, derr := grpcx.Dial(l.addr, l.c.cfg.GRPC); derr == nil {
				l.conn.Close()
				l.conn = conn
			}
		}
		if time.Since(start) > 5*time.Second {
			backoff = 20 * time.Millisecond
		}
		l.c.log.Debug("broker link down", "broker", l.id, "err", err)
		select {
		case <-l.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}

func (l *link) session() error {
	ctx, cancel := context.WithCancel(l.ctx)
	defer cancel()
	stream, err := sccv1.NewBrokerClient(l.conn).Link(ctx, grpc.WaitForReady(false))
	if err != nil {
		return err
	}
	l.received.Store(0)
	num := streamNumbers.Add(1)
	if err := stream.Send(&sccv1.LinkRequest{WorkerId: l.c.cfg.ID, Confirms: true, Link: num}); err != nil {
		l.lost.Store(num) // the broker may have it
		return err
	}
	l.mu.Lock()
	l.up = true
	l.mu.Unlock()
	l.c.linkUp(l)
	// Every subscription is queued ahead of it: the broker lets go of
	// what it held for this worker's previous stream (see the broker's
	// ghost.go).
	l.queue(sccv1.OpKind_OP_KIND_REPLACE, "", nil, nil, time.Time{})
	l.lost.Store(0)

	sendErr := make(chan error, 1)
	go func() { sendErr <- l.sendLoop(ctx, stream) }()
	var heard atomic.Int64 // unix nanos of the last message from the broker
	heard.Store(time.Now().UnixNano())
	silent := make(chan struct{})
	go l.watch(ctx, cancel, &heard, silent)
	var recvErr error
	for {
		resp, err := stream.Recv()
		if err != nil {
			recvErr = err
			select {
			case <-silent:
				recvErr = errLinkSilent
			default:
			}
			break
		}
		heard.Store(time.Now().UnixNano())
		for _, d := range resp.Deliveries {
			l.c.deliver(d.Channel, d.Data)
		}
		if len(resp.Deliveries) > 0 {
			l.received.Add(uint64(len(resp.Deliveries)))
			if !l.confirmArmed.Swap(true) {
				time.AfterFunc(confirmDelay, func() { l.confirmArmed.Store(false); l.wake() })
			}
		}
		if resp.Acked != 0 {
			l.settle(resp.Acked, resp.Failed)
		}
	}
	cancel()
	<-sendErr
	l.lost.Store(num)
	l.down()
	return recvErr
}

// watch sends a sync each fifth of a second nothing came from the broker
// or nothing went to it (so both ends hear from each other at least that
// often), and cuts the session (closing silent) when nothing has come for
// Config.LinkTimeout. It sleeps until the next sync is due or the link
// would time out, whichever comes first: a silent broker is noticed at
// the timeout itself, and an idle link wakes its worker only for its
// syncs. Workers that lose the same broker notice within a fifth of a
// second of each other even when idle (each last heard from it at its
// latest sync before it stopped), which the partition margin relies on
// (see partition.go). Syncing more often would narrow that further, at a
// price: an idle cluster of 3 workers and 3 brokers used about 60% more
// CPU with syncs each tenth of a second than each half second on the
// project's test machine, 20% more with syncs each fifth.
func (l *link) watch(ctx context.Context, cut context.CancelFunc, heard *atomic.Int64, silent chan struct{}) {
	every, timeout := min(syncEvery, l.c.cfg.LinkTimeout/3), l.c.cfg.LinkTimeout
	t := time.NewTimer(every)
	defer t.Stop()
	sent, synced := l.lastOp(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now, last := time.Now(), time.Unix(0, heard.Load())
		quiet := now.Sub(last)
		if quiet >= timeout {
			close(silent)
			l.c.m.linkSilent.Inc()
			cut()
			return
		}
		if now.Sub(synced) >= every {
			if op := l.lastOp(); quiet >= every || op == sent {
				l.queue(sccv1.OpKind_OP_KIND_SYNC, "", nil, nil, time.Time{})
			}
			sent, synced = l.lastOp(), now
		}
		t.Reset(min(synced.Add(every).Sub(now), last.Add(timeout).Sub(now)))
	}
}

// syncEvery is how often a quiet link syncs.
const syncEvery = 200 * time.Millisecond

func (l *link) wake() {
	select {
	case l.signal <- struct{}{}:
	default:
	}
}

// sendLoop sends the queued operations in batches, each with the count of
// deliveries received (alone when there is nothing else to send).
func (l *link) sendLoop(ctx context.Context, stream sccv1.Broker_LinkClient) error {
	var confirmed uint64
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.signal:
		}
		for {
			l.mu.Lock()
			// At most maxOpsPerMessage operations and, beyond the first,
			// grpcx.MaxBatchBytes.
			n, size := 0, 0
			for n < len(l.ops) && n < maxOpsPerMessage {
				sz := opSize(l.ops[n].Channel, l.ops[n].Data)
				if n > 0 && size+sz > grpcx.MaxBatchBytes {
					break
				}
				size += sz
				if l.ops[n].Kind == sccv1.OpKind_OP_KIND_PUBLISH {
					l.bytes -= sz
				}
				n++
			}
			batch := l.ops[:n:n]
			l.ops = l.ops[n:]
			if len(l.ops) == 0 {
				l.ops = nil
			}
			l.mu.Unlock()
			received := l.received.Load()
			if n == 0 && received == confirmed {
				break
			}
			if err := stream.Send(&sccv1.LinkRequest{Ops: batch, Received: received}); err != nil {
				return err
			}
			confirmed = received
		}
		l.c.m.queueDepth.WithLabelValues(l.id).Set(0)
	}
}

// opSize is what an operation counts for in batches and queue limits.
func opSize(ch string, data []byte) int { return len(ch) + len(data) + 16 }

// settle completes every pending operation up to acked.
func (l *link) settle(acked uint64, failed []*sccv1.OpError) {
	l.mu.Lock()
	if acked > l.acked {
		l.acked = acked
	}
	k := 0
	for k < len(l.pending) && l.pending[k].seq <= acked {
		k++
	}
	done := l.pending[:k:k]
	l.pending = l.pending[k:]
	l.mu.Unlock()
	// A publish can fail more than once (a worker lost, and another):
	// the first reason is kept.
	var bySeq map[uint64]*sccv1.OpError
	if len(failed) > 0 {
		bySeq = make(map[uint64]*sccv1.OpError, len(failed))
		for _, f := range failed {
			if _, ok := bySeq[f.Seq]; !ok {
				bySeq[f.Seq] = f
			}
		}
	}
	for _, p := range done {
		var err error
		if f := bySeq[p.seq]; f != nil {
			if f.NotOwner && p.publish {
				l.c.reroute(p.channel, p.data, p.done, p.since)
				continue
			}
			err = errors.New(f.Message)
		}
		if p.done != nil {
			p.done(err)
		}
	}
}

// down fails what was in flight: those publishes were inside the broker
// (or on the wire) when it went away.
func (l *link) down() {
	l.mu.Lock()
	l.up = false
	l.downAt = time.Now()
	pending := l.pending
	l.pending = nil
	l.ops, l.bytes = nil, 0
	l.mu.Unlock()
	lost := 0
	for _, p := range pending {
		if p.publish {
			lost++
		}
		if p.done != nil {
			p.done(errLinkLost)
		}
	}
	if lost > 0 {
		l.c.m.lost.Add(float64(lost))
		l.c.log.Warn("broker link lost with publishes in flight", "broker", l.id, "publishes", lost)
	}
	l.c.linkDown(l)
}
