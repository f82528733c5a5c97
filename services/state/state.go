// Package state is the cluster's membership and ring service. Brokers,
// workers and gateways join over a gRPC stream (sccv1.State/Join) held open
// with heartbeats; a member whose stream breaks or whose lease lapses is
// gone. State numbers the broker set (the ring epoch), drives the
// three-phase migration between epochs (subscribe-both, publish-new,
// release-old) on acknowledgements from every live worker, queues broker
// changes while a migration runs, and streams the view to every member.
//
// It keeps only soft state. After a restart it waits a settle window for
// members to return and rebuilds the ring from the views workers report,
// so epochs never go backwards and a migration in flight is finished.
//
// Lock order: Server.mu only; sends happen on each member's own goroutine.
package state

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/scc-k8s/scc/pkg/grpcx"
	"github.com/scc-k8s/scc/proto/sccv1"
)

// Config configures the state service.
type Config struct {
	// Lease drops a member that has sent nothing for this long. Default 5s.
	Lease time.Duration
	// SettleWindow is how long a starting state waits for members before
	// publishing a new epoch. Default 2s.
	SettleWindow time.Duration
	// Debounce gathers broker changes this close together into one
	// migration. Default 100ms.
	Debounce time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives metrics (default: none).
	Registerer prometheus.Registerer
	// Clock defaults to time.Now.
	Clock func() time.Time
}

// Server implements sccv1.StateServer.
type Server struct {
	sccv1.UnimplementedStateServer
	cfg Config
	log *slog.Logger
	m   *metrics

	mu       sync.Mutex
	members  map[string]*member
	epoch    uint64
	phase    sccv1.Phase
	brokers  []*sccv1.Member // ring of epoch
	prev     []*sccv1.Member // ring being left (during a migration)
	acks     map[string]bool // workers that still have to ack this phase
	started  time.Time
	settling bool
	// graceOver is set once brokers of a restored ring that never
	// re-registered no longer count as members.
	graceOver bool
	restored  map[string]bool // ring brokers learned from workers, not yet re-registered
	changeAt  time.Time       // when a broker change was first noticed (debounce)
	migStart  time.Time
	frozen    bool // shutting down: members leaving is not a ring change
	// loadDirty is set when a member's load changed since the last view:
	// loads go out at most every loadEvery; a change of readiness or of
	// lost links, or a worker with lost links left without load, at once.
	loadDirty bool
	loadSent  time.Time
	wake      chan struct{}
	stop      chan struct{}
	done      chan struct{}
}

type member struct {
	info     *sccv1.Member
	view     *sccv1.View
	lastSeen time.Time
	out      chan *sccv1.ClusterView // latest view wins
	gone     chan struct{}
	kill     func()
}

// New returns a state server; Close stops its timers.
func New(cfg Config) *Server {
	if cfg.Lease <= 0 {
		cfg.Lease = 5 * time.Second
	}
	if cfg.SettleWindow < 0 {
		cfg.SettleWindow = 0
	} else if cfg.SettleWindow == 0 {
		cfg.SettleWindow = 2 * time.Second
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		m:        newMetrics(cfg.Registerer),
		members:  make(map[string]*member),
		started:  cfg.Clock(),
		settling: cfg.SettleWindow > 0,
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go s.loop()
	return s
}

// Freeze stops all decisions: a state shutting down sees every member
// leave, which must not become ring changes that some members might still
// receive before their streams end.
func (s *Server) Freeze() {
	s.mu.Lock()
	s.frozen = true
	s.mu.Unlock()
}

// Close stops the server's timers (streams end with the gRPC server).
func (s *Server) Close() {
	s.Freeze()
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// Epoch returns the current ring epoch and phase.
func (s *Server) Epoch() (uint64, sccv1.Phase) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch, s.phase
}

// Waiting returns, sorted, the workers that still have to acknowledge the
// current migration phase (none when the ring is stable).
func (s *Server) Waiting() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.acks))
	for id := range s.acks {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// View returns the current cluster view.
func (s *Server) View() *sccv1.ClusterView {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.viewLocked()
}

func (s *Server) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// loop expires leases, ends the settle window and applies debounced
// broker changes.
func (s *Server) loop() {
	defer close(s.done)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.wake:
		}
		s.mu.Lock()
		now := s.cfg.Clock()
		for id, m := range s.members {
			if now.Sub(m.lastSeen) > s.cfg.Lease {
				s.log.Info("member lease expired", "member", id)
				s.removeLocked(id, m)
			}
		}
		// The settle window ends once it has passed and a worker is back
		// to tell the ring it applies (a fresh cluster's first worker
		// reports an empty one), or, without any worker, after a lease
		// more: a ring published before the workers return could differ
		// from theirs and move channels without a migration.
		if s.settling && now.Sub(s.started) >= s.cfg.SettleWindow &&
			(len(s.liveWorkersLocked()) > 0 || now.Sub(s.started) >= s.cfg.SettleWindow+s.cfg.Lease) {
			s.settling = false
			s.restoreLocked()
		}
		if !s.graceOver && now.Sub(s.started) >= s.cfg.SettleWindow+s.cfg.Lease {
			s.graceOver = true // brokers that never came back leave the ring now
			s.brokerChangedLocked()
		}
		s.reconcileLocked(now)
		if s.loadDirty && now.Sub(s.loadSent) >= loadEvery {
			s.broadcastLocked()
		}
		s.mu.Unlock()
	}
}

// loadEvery spaces the views sent only because members' loads changed
// (gateways balance by them; they count their own routing in between).
const loadEvery = time.Second

// Join is one member's stream.
func (s *Server) Join(stream sccv1.State_JoinServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	reg := first.GetRegister()
	if reg == nil || reg.GetMember().GetId() == "" || reg.GetMember().GetRole() == sccv1.Role_ROLE_UNSPECIFIED {
		return status.Error(codes.InvalidArgument, "state: the first message must register a member with an id and a role")
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	m := &member{
		info:     proto.Clone(reg.Member).(*sccv1.Member),
		view:     reg.View,
		lastSeen: s.cfg.Clock(),
		out:      make(chan *sccv1.ClusterView, 1),
		gone:     make(chan struct{}),
		kill:     cancel,
	}
	m.info.LostLinks = capLostLinks(m.info.LostLinks)
	id := m.info.Id
	s.mu.Lock()
	if old := s.members[id]; old != nil {
		s.removeLocked(id, old) // a member that reconnects replaces itself
	}
	s.members[id] = m
	s.adoptLocked(m.view)
	s.m.members.WithLabelValues(roleName(m.info.Role)).Inc()
	s.log.Info("member joined", "member", id, "role", roleName(m.info.Role), "addr", m.info.Address)
	if m.info.Role == sccv1.Role_ROLE_BROKER {
		s.brokerChangedLocked()
	}
	s.broadcastLocked()
	s.mu.Unlock()
	s.poke()

	go func() { // the only goroutine that calls Send
		for {
			select {
			case <-ctx.Done():
				return
			case v := <-m.out:
				if err := stream.Send(v); err != nil {
					cancel()
					return
				}
			}
		}
	}()
	recvErr := make(chan error, 1)
	go func() {
		recvErr <- grpcx.Guard("state member receive", func() error {
			for {
				req, err := stream.Recv()
				if err != nil {
					return err
				}
				s.handle(id, m, req)
			}
		})
	}()
	// Return when the member goes, the send fails, or state drops the
	// member (lease, replacement): returning ends the stream, so the
	// member learns it and joins again.
	err = nil
	select {
	case err = <-recvErr:
	case <-ctx.Done():
	}
	s.leave(id, m)
	cancel()
	if err == nil || errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func (s *Server) leave(id string, m *member) {
	s.mu.Lock()
	if s.members[id] == m {
		s.log.Info("member left", "member", id)
		s.removeLocked(id, m)
		s.reconcileLocked(s.cfg.Clock())
	}
	s.mu.Unlock()
	s.poke()
}

// maxLostLinks bounds the lost links kept for a member (a worker has one
// at most per broker of its ring): a malformed report cannot make every
// view that much larger.
const maxLostLinks = 256

// capLostLinks keeps the first maxLostLinks of a report.
func capLostLinks(ll []*sccv1.LostLink) []*sccv1.LostLink {
	return ll[:min(len(ll), maxLostLinks)]
}

// sameLostLinks compares two reports of a worker's lost links.
func sameLostLinks(a, b []*sccv1.LostLink) bool {
	return slices.EqualFunc(a, b, func(x, y *sccv1.LostLink) bool { return x.BrokerId == y.BrokerId && x.Link == y.Link })
}

func (s *Server) handle(id string, m *member, req *sccv1.JoinRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.members[id] != m {
		return
	}
	m.lastSeen = s.cfg.Clock()
	switch msg := req.Msg.(type) {
	case *sccv1.JoinRequest_Heartbeat:
		wasIdle := m.info.Load == 0
		if m.info.Load != msg.Heartbeat.Load {
			m.info.Load = msg.Heartbeat.Load
			s.loadDirty = true
		}
		if m.info.Ready != msg.Heartbeat.Ready {
			m.info.Ready = msg.Heartbeat.Ready
			s.log.Info("member readiness", "member", id, "ready", m.info.Ready)
			s.broadcastLocked()
		}
		if lost := capLostLinks(msg.Heartbeat.LostLinks); !sameLostLinks(m.info.LostLinks, lost) {
			// Brokers act on it at once: they give up the streams the
			// worker lost and, once it has no clients, what they held for
			// them (the broker's ghost.go).
			m.info.LostLinks = lost
			s.broadcastLocked()
		} else if len(m.info.LostLinks) > 0 && wasIdle != (m.info.Load == 0) {
			s.broadcastLocked()
		}
	case *sccv1.JoinRequest_Ack:
		if msg.Ack.Epoch == s.epoch && msg.Ack.Phase == s.phase && s.acks[id] {
			delete(s.acks, id)
			s.reconcileLocked(m.lastSeen)
		}
	case *sccv1.JoinRequest_Drain:
		if !m.info.Draining {
			s.log.Info("member draining", "member", id)
			m.info.Draining = true
			if m.info.Role == sccv1.Role_ROLE_BROKER {
				s.brokerChangedLocked()
			}
			s.broadcastLocked()
		}
	}
}

func (s *Server) removeLocked(id string, m *member) {
	delete(s.members, id)
	s.m.members.WithLabelValues(roleName(m.info.Role)).Dec()
	m.kill()
	if s.acks != nil {
		delete(s.acks, id)
	}
	if m.info.Role == sccv1.Role_ROLE_BROKER {
		s.brokerChangedLocked()
		// A crashed broker cannot drain: a ring that still names it is
		// replaced now, not after the debounce.
		if containsID(s.brokers, id) || containsID(s.prev, id) {
			s.changeAt = s.cfg.Clock().Add(-s.cfg.Debounce)
		}
	}
	s.broadcastLocked()
}

func (s *Server) brokerChangedLocked() {
	if s.changeAt.IsZero() {
		s.changeAt = s.cfg.Clock()
	}
}

// restoreLocked rebuilds the ring after the settle window from the views
// the workers reported: the newest epoch wins, and its migration (if any)
// continues.
func (s *Server) restoreLocked() {
	var best *sccv1.View
	for _, m := range s.members {
		if v := m.view; v != nil && (best == nil || v.Epoch > best.Epoch) {
			best = v
		}
	}
	if best != nil && best.Epoch > s.epoch {
		s.epoch = best.Epoch
		s.phase = best.Phase
		s.brokers = cloneMembers(best.Brokers)
		s.prev = cloneMembers(best.PrevBrokers)
		if s.phase != sccv1.Phase_PHASE_STABLE {
			s.acks = s.liveWorkersLocked()
			s.migStart = s.cfg.Clock()
		}
		s.markRestoredLocked()
		s.log.Info("ring restored from members", "epoch", s.epoch, "phase", s.phase.String(), "brokers", ids(s.brokers))
	}
	s.changeAt = s.cfg.Clock()
	s.broadcastLocked()
}

// adoptLocked takes a ring a worker reports at registration after the
// settle window when it is newer than ours (or the same epoch with other
// brokers): epochs must never be reused with another meaning, so state
// continues from it, and a following migration moves it to the live set.
func (s *Server) adoptLocked(v *sccv1.View) {
	if s.settling || v == nil || v.Epoch < s.epoch || (v.Epoch == s.epoch && sameIDs(v.Brokers, s.brokers)) {
		return
	}
	if v.Epoch == s.epoch {
		s.epoch = v.Epoch + 1 // our own epoch of that number meant another ring
	} else {
		s.epoch = v.Epoch
	}
	s.phase = v.Phase
	s.brokers = cloneMembers(v.Brokers)
	s.prev = cloneMembers(v.PrevBrokers)
	s.acks = nil
	if s.phase != sccv1.Phase_PHASE_STABLE {
		s.acks = s.liveWorkersLocked()
		s.migStart = s.cfg.Clock()
	}
	s.changeAt = s.cfg.Clock().Add(-s.cfg.Debounce)
	s.m.epoch.Set(float64(s.epoch))
	s.markRestoredLocked()
	s.log.Info("ring adopted from a returning worker", "epoch", s.epoch, "phase", s.phase.String(), "brokers", ids(s.brokers))
}

func (s *Server) markRestoredLocked() {
	if s.restored == nil {
		s.restored = make(map[string]bool)
	}
	for _, b := range append(slices.Clone(s.brokers), s.prev...) {
		if s.members[b.Id] == nil {
			s.restored[b.Id] = true
		}
	}
}

// reconcileLocked advances a migration whose acks are in, and starts one
// when the live broker set differs from the ring.
func (s *Server) reconcileLocked(now time.Time) {
	if s.settling || s.frozen {
		return
	}
	if s.phase != sccv1.Phase_PHASE_STABLE {
		if s.newRingLostLocked() {
			s.startMigrationLocked(now) // supersede: a target broker died
			return
		}
		if len(s.brokers) == 0 && len(s.desiredLocked()) > 0 {
			// A migration to an empty ring (the last broker died) moves
			// nothing: a broker that joins meanwhile supersedes it at once
			// rather than waiting for it and a debounce.
			s.changeAt = time.Time{}
			s.startMigrationLocked(now)
			return
		}
		if len(s.acks) > 0 {
			return
		}
		switch s.phase {
		case sccv1.Phase_PHASE_SUBSCRIBE_BOTH:
			s.phase = sccv1.Phase_PHASE_PUBLISH_NEW
		case sccv1.Phase_PHASE_PUBLISH_NEW:
			s.phase = sccv1.Phase_PHASE_RELEASE_OLD
		case sccv1.Phase_PHASE_RELEASE_OLD:
			s.phase = sccv1.Phase_PHASE_STABLE
			s.prev = nil
			s.m.migrationsFinished.Inc()
			s.m.migrationSeconds.Observe(now.Sub(s.migStart).Seconds())
			s.log.Info("migration finished", "epoch", s.epoch, "took", now.Sub(s.migStart).String())
		}
		s.acks = s.liveWorkersLocked()
		s.broadcastLocked()
		if s.phase != sccv1.Phase_PHASE_STABLE {
			return
		}
	}
	if s.changeAt.IsZero() || now.Sub(s.changeAt) < s.cfg.Debounce {
		return
	}
	s.changeAt = time.Time{}
	if sameIDs(s.desiredLocked(), s.brokers) {
		s.broadcastLocked() // membership details (addresses, load) may differ
		return
	}
	s.startMigrationLocked(now)
}

// newRingLostLocked reports whether a broker of the target ring is gone.
func (s *Server) newRingLostLocked() bool {
	for _, b := range s.brokers {
		if m := s.members[b.Id]; m == nil && !s.returningLocked(b.Id) {
			return true
		}
	}
	return false
}

// returningLocked reports whether a ring broker that has not registered
// with this state yet is still given time to: for a lease after the
// settle window of a (re)started state, since brokers rejoin on their own
// schedule and the workers still reach them.
func (s *Server) returningLocked(id string) bool {
	if s.cfg.Clock().Sub(s.started) >= s.cfg.SettleWindow+s.cfg.Lease {
		return false
	}
	return s.restored[id]
}

func (s *Server) startMigrationLocked(now time.Time) {
	desired := s.desiredLocked()
	// Publishers currently use prev during subscribe-both, brokers after.
	from := s.brokers
	if s.phase == sccv1.Phase_PHASE_SUBSCRIBE_BOTH {
		from = s.prev
	}
	s.epoch++
	s.brokers = desired
	s.m.epoch.Set(float64(s.epoch))
	workers := s.liveWorkersLocked()
	if len(from) == 0 || len(workers) == 0 {
		s.phase, s.prev, s.acks = sccv1.Phase_PHASE_STABLE, nil, nil
		s.log.Info("ring changed", "epoch", s.epoch, "brokers", ids(desired))
	} else {
		s.phase, s.prev, s.acks = sccv1.Phase_PHASE_SUBSCRIBE_BOTH, from, workers
		s.migStart = now
		s.m.migrationsStarted.Inc()
		s.log.Info("migration started", "epoch", s.epoch, "from", ids(from), "to", ids(desired))
	}
	s.broadcastLocked()
}

func (s *Server) desiredLocked() []*sccv1.Member {
	var out []*sccv1.Member
	for _, m := range s.members {
		if m.info.Role == sccv1.Role_ROLE_BROKER && !m.info.Draining {
			out = append(out, proto.Clone(m.info).(*sccv1.Member))
		}
	}
	for _, b := range s.brokers {
		if s.members[b.Id] == nil && s.returningLocked(b.Id) {
			out = append(out, proto.Clone(b).(*sccv1.Member))
		}
	}
	slices.SortFunc(out, func(a, b *sccv1.Member) int { return cmp.Compare(a.Id, b.Id) })
	return out
}

func (s *Server) liveWorkersLocked() map[string]bool {
	out := make(map[string]bool)
	for id, m := range s.members {
		if m.info.Role == sccv1.Role_ROLE_WORKER {
			out[id] = true
		}
	}
	return out
}

func (s *Server) viewLocked() *sccv1.ClusterView {
	v := &sccv1.ClusterView{
		Epoch:       s.epoch,
		Phase:       s.phase,
		Brokers:     cloneMembers(s.brokers),
		PrevBrokers: cloneMembers(s.prev),
		Settling:    s.settling,
	}
	for _, m := range s.members {
		switch m.info.Role {
		case sccv1.Role_ROLE_WORKER:
			v.Workers = append(v.Workers, proto.Clone(m.info).(*sccv1.Member))
		case sccv1.Role_ROLE_GATEWAY:
			v.Gateways = append(v.Gateways, proto.Clone(m.info).(*sccv1.Member))
		}
	}
	byID := func(a, b *sccv1.Member) int { return cmp.Compare(a.Id, b.Id) }
	slices.SortFunc(v.Workers, byID)
	slices.SortFunc(v.Gateways, byID)
	return v
}

// broadcastLocked queues the current view to every member; a member that
// has not taken the previous one gets only the newest.
func (s *Server) broadcastLocked() {
	if s.frozen {
		return
	}
	v := s.viewLocked()
	s.loadDirty, s.loadSent = false, s.cfg.Clock()
	for _, m := range s.members {
		select {
		case <-m.out:
		default:
		}
		m.out <- v
	}
}

func cloneMembers(in []*sccv1.Member) []*sccv1.Member {
	out := make([]*sccv1.Member, len(in))
	for i, m := range in {
		out[i] = proto.Clone(m).(*sccv1.Member)
	}
	return out
}

func containsID(ms []*sccv1.Member, id string) bool {
	return slices.ContainsFunc(ms, func(m *sccv1.Member) bool { return m.Id == id })
}

func sameIDs(a, b []*sccv1.Member) bool { return slices.Equal(ids(a), ids(b)) }

func ids(ms []*sccv1.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Id
	}
	return out
}

func roleName(r sccv1.Role) string {
	switch r {
	case sccv1.Role_ROLE_BROKER:
		return "broker"
	case sccv1.Role_ROLE_WORKER:
		return "worker"
	case sccv1.Role_ROLE_GATEWAY:
		return "gateway"
	}
	return "unknown"
}
