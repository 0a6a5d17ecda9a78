package agents

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// An agent runs only what the event store ordered. A step message names a
// step (cluster, operation, attempt, leader token, step id) and nothing
// else; before it does anything with it, the agent checks, in order:
//
//  1. etcd: the cluster's leader key exists and its create revision is the
//     message's token (the dispatching coordinator leads the cluster now);
//  2. the committed events of the cluster (folded by the agent, read by
//     direct get): the token is the cluster's leader token, and the
//     operation, attempt and step are what the cluster runs now
//     (domain.Cluster.CheckDispatch) — which also yields the step's
//     definition;
//  3. the committed events of the step's machine: it is registered; its
//     address, port, login and pinned host key are the SSH target;
//  4. the vault: the machine's credential opens for that machine only.
//
// A message that fails 1 or 2 was forged, replayed or outlived its leader:
// it is refused (logged, terminated in the queue, nothing published,
// nothing run). A step that passes them was ordered, but when its machine
// or credential cannot be used (3, 4) it fails with the reason, so that
// its operation ends instead of waiting for it. When the check itself
// cannot be done (etcd or NATS away) the step is handed back for later.

// order is a step as the committed events order it: what the agent runs,
// where, and with which credential.
type order struct {
	Cluster   string
	Operation string
	Attempt   int
	Token     int64
	Step      domain.Step    // as the operation's plan defines it
	Machine   domain.Machine // the registered machine of Step.Host; zero for a host-less noop
	target    remote.Target  // Machine with its credential; zero for a host-less noop
}

// refusal is a step message the agent does not run, with the reason.
type refusal struct{ reason string }

func (r *refusal) Error() string { return r.reason }

func refused(format string, args ...any) error { return &refusal{reason: fmt.Sprintf(format, args...)} }

// unusable is an ordered step whose machine or credential cannot be used:
// the step fails with the reason.
type unusable struct{ err error }

func (u *unusable) Error() string { return u.err.Error() }
func (u *unusable) Unwrap() error { return u.err }

// Cache sizes and the waits for a commit the agent's read did not show.
const (
	defaultClusterCache = 256
	machineCache        = 1024
	// leaderCheckTimeout bounds the etcd read of a leader key.
	leaderCheckTimeout = 5 * time.Second
	// loadTimeout bounds one read of an aggregate's new commits.
	loadTimeout = 10 * time.Second
)

// unseenWaits are the pauses before the events are read again when a
// message names a commit they do not show: a replica answering a direct get
// may lag the one the dispatcher's append went to by a moment. A forged
// message is refused once they are spent (1.5 s).
var unseenWaits = []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}

// verifier checks step messages against etcd, the committed events and
// the vault. It keeps each cluster's and machine's state folded from the
// events, with the last stream sequence read, so that a check reads only
// the commits made since the last one.
type verifier struct {
	etcd     *clientv3.Client
	events   Events
	vault    *secrets.Vault
	waits    []time.Duration
	clusters *lru[*clusterView]
	machines *lru[*machineView]
}

func newVerifier(etcd *clientv3.Client, events Events, vault *secrets.Vault, clusters int) *verifier {
	if clusters <= 0 {
		clusters = defaultClusterCache
	}
	return &verifier{etcd: etcd, events: events, vault: vault, waits: unseenWaits,
		clusters: newLRU(clusters, func() *clusterView { return &clusterView{fold: domain.NewClusterFold(domain.Cluster{})} }),
		machines: newLRU(machineCache, func() *machineView { return &machineView{} })}
}

// verify returns the step d names as the store ordered it, with its
// target. Its error is a *refusal (the message is not run), an *unusable
// (the step fails with it), or another error (the check could not be done:
// hand the step back).
func (v *verifier) verify(ctx context.Context, d workqueue.Dispatch) (order, error) {
	if err := v.checkLeader(ctx, d); err != nil {
		return order{}, err
	}
	step, err := v.checkEvents(ctx, d)
	if err != nil {
		return order{}, err
	}
	o := order{Cluster: d.Cluster, Operation: d.Operation, Attempt: d.Attempt, Token: d.Token, Step: step}
	if step.Host == "" {
		if step.Kind == domain.StepNoop {
			return o, nil // runs nothing anywhere
		}
		return order{}, &unusable{fmt.Errorf("step %s of operation %s has no host in its plan", step.ID, d.Operation)}
	}
	if o.Machine, err = v.machine(ctx, step.Host); err != nil {
		return order{}, err
	}
	if o.target, err = v.target(ctx, o.Machine); err != nil {
		return order{}, err
	}
	return o, nil
}

// checkLeader: the cluster's leader key in etcd (the first created under
// its prefix) is the one whose create revision is the message's token.
func (v *verifier) checkLeader(ctx context.Context, d workqueue.Dispatch) error {
	gctx, cancel := context.WithTimeout(ctx, leaderCheckTimeout)
	defer cancel()
	resp, err := v.etcd.Get(gctx, leadership.ClusterLeaderKeys(d.Cluster), clientv3.WithFirstCreate()...)
	if err != nil {
		return fmt.Errorf("read the leader key of cluster %s from etcd: %w", d.Cluster, err)
	}
	if len(resp.Kvs) == 0 {
		return refused("cluster %s has no leader in etcd: a step runs only for the coordinator that leads its cluster (the next leader dispatches it again)", d.Cluster)
	}
	if leader := resp.Kvs[0].CreateRevision; leader != d.Token {
		return refused("token %d is not the leader token of cluster %s in etcd (%d): the step was not dispatched by its leader", d.Token, d.Cluster, leader)
	}
	return nil
}

// checkEvents: the cluster's committed state orders the step now. A
// message naming commits the read does not show is checked again after a
// pause, a few times, before it is refused.
func (v *verifier) checkEvents(ctx context.Context, d workqueue.Dispatch) (domain.Step, error) {
	for try := 0; ; try++ {
		c, err := v.cluster(ctx, d.Cluster)
		if err != nil {
			return domain.Step{}, err
		}
		step, err := c.CheckDispatch(d.Operation, d.Step, d.Attempt, d.Token)
		if err == nil {
			return step, nil
		}
		var r *domain.DispatchRefusal
		if !errors.As(err, &r) {
			return domain.Step{}, err
		}
		if !r.Unseen || try >= len(v.waits) {
			return domain.Step{}, &refusal{reason: r.Reason}
		}
		sleep(ctx, v.waits[try])
		if ctx.Err() != nil {
			return domain.Step{}, ctx.Err()
		}
	}
}

// machine returns the registered machine host as its committed events say.
func (v *verifier) machine(ctx context.Context, host string) (domain.Machine, error) {
	mv := v.machines.get(host)
	var m domain.Machine
	err := mv.refresh(mv.arrive(), func(read bool) error {
		if read {
			evs, last, err := v.eventsSince(ctx, domain.AggregateMachine, host, mv.lastSeq)
			if err != nil {
				return err
			}
			for _, e := range evs {
				mv.m = domain.EvolveMachine(mv.m, e)
			}
			mv.lastSeq = last
		}
		m = mv.m
		return nil
	})
	switch {
	case err != nil:
		return domain.Machine{}, err
	case !m.Active():
		return domain.Machine{}, &unusable{fmt.Errorf("machine %s is not registered: register it, then retry the operation", host)}
	case m.Host != host:
		return domain.Machine{}, &unusable{fmt.Errorf("the events of machine %s name host %q", host, m.Host)}
	}
	return m, nil
}

// target is m as the agent logs in to it: its address, port and login and
// its pinned host key from the events, and its credential from the vault,
// which opens for m only.
func (v *verifier) target(ctx context.Context, m domain.Machine) (remote.Target, error) {
	kind, secret, err := v.vault.Get(ctx, m.Credential.ID, m.Host)
	if err != nil {
		if domain.ErrorCode(err) == domain.Unavailable {
			return remote.Target{}, fmt.Errorf("credential of %s: %w", m.Host, err)
		}
		return remote.Target{}, &unusable{fmt.Errorf("credential of %s: %w", m.Host, err)}
	}
	if string(kind) != m.Credential.Kind {
		return remote.Target{}, &unusable{fmt.Errorf("credential %s of %s is a %s in the vault, but the machine was registered with a %s",
			m.Credential.ID, m.Host, kind, m.Credential.Kind)}
	}
	// The address the host resolved to at registration (resolved once);
	// a machine registered by name before addresses were recorded is
	// dialled by name. Either way the pinned host key is checked before
	// any credential is offered.
	addr := m.Addr()
	if addr == "" {
		addr = m.Host
	}
	t := remote.Target{Host: addr, Port: m.SSHPort, User: m.User, HostKey: m.HostKey.Key}
	switch kind {
	case secrets.KindPassword:
		t.Password = string(secret)
	case secrets.KindPrivateKey:
		t.PrivateKey = secret
	default:
		return remote.Target{}, &unusable{fmt.Errorf("credential of %s has unknown kind %q", m.Host, kind)}
	}
	return t, nil
}

// clusterView is one cluster's state as the agent folded it.
type clusterView struct {
	fresh
	fold    *domain.ClusterFold
	state   domain.Cluster // the fold's state after the last read
	lastSeq uint64
}

// machineView is one machine's state as the agent folded it.
type machineView struct {
	fresh
	m       domain.Machine
	lastSeq uint64
}

// fresh makes the reads of one view coalesce: a check needs the commits
// made before its step message arrived, which any read that began after
// the message arrived has. While one read runs, the checks that arrive
// wait for it and then share one more read, instead of one each.
type fresh struct {
	mu      sync.Mutex
	started atomic.Uint64 // reads begun
	done    uint64        // number of the last read that succeeded
}

// arrive marks a check's arrival: what refresh needs to know which reads
// are recent enough for it.
func (f *fresh) arrive() uint64 { return f.started.Load() }

// refresh calls use under the view's lock, with read true when use must
// read the view's new commits first: unless a read that began after the
// check arrived has succeeded meanwhile.
func (f *fresh) refresh(arrived uint64, use func(read bool) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done > arrived {
		return use(false)
	}
	n := f.started.Add(1)
	if err := use(true); err != nil {
		return err
	}
	f.done = n
	return nil
}

// cluster brings the cluster's state up to date with its commits and
// returns it.
func (v *verifier) cluster(ctx context.Context, name string) (domain.Cluster, error) {
	cv := v.clusters.get(name)
	var c domain.Cluster
	err := cv.refresh(cv.arrive(), func(read bool) error {
		if read {
			evs, last, err := v.eventsSince(ctx, domain.AggregateCluster, name, cv.lastSeq)
			if err != nil {
				return err
			}
			for _, e := range evs {
				cv.fold.Apply(e)
			}
			if len(evs) > 0 || cv.lastSeq == 0 {
				// Handing a state out makes the fold copy what the next
				// events change: only when there is something new.
				cv.state = cv.fold.State()
			}
			cv.lastSeq = last
		}
		c = cv.state
		return nil
	})
	if err != nil {
		return domain.Cluster{}, err
	}
	if c.Name == "" {
		c.Name = name // no deploy committed (yet): the reasons name the cluster all the same
	}
	return c, nil
}

// eventsSince reads the events committed to one aggregate after stream
// sequence after, under loadTimeout, and decodes every one of them, or
// none: a view is advanced by whole reads only. It answers them with the
// sequence read up to.
func (v *verifier) eventsSince(ctx context.Context, aggregateType, id string, after uint64) ([]domain.Event, uint64, error) {
	lctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()
	st, err := v.events.LoadSince(lctx, aggregateType, id, after)
	if err != nil {
		return nil, 0, fmt.Errorf("read the events of %s %s: %w", aggregateType, id, err)
	}
	out := make([]domain.Event, 0, len(st.Events))
	for _, e := range st.Events {
		de, err := domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
		if err != nil {
			return nil, 0, fmt.Errorf("read the events of %s %s: seq %d: %w (is this agent older than the servers?)", aggregateType, id, e.Seq, err)
		}
		out = append(out, de)
	}
	return out, st.LastSeq, nil
}

// lru keeps the most recently used values by key, at most max of them.
// A value evicted while in use stays valid for its user; the next get of
// its key starts a new one.
type lru[V any] struct {
	mu    sync.Mutex
	max   int
	order *list.List // of *lruEntry[V], most recent first
	byKey map[string]*list.Element
	fresh func() V
}

type lruEntry[V any] struct {
	key   string
	value V
}

func newLRU[V any](max int, fresh func() V) *lru[V] {
	return &lru[V]{max: max, order: list.New(), byKey: map[string]*list.Element{}, fresh: fresh}
}

// get returns key's value, made with fresh when it has none.
func (c *lru[V]) get(key string) V {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[key]; ok {
		c.order.MoveToFront(el)
		return el.Value.(*lruEntry[V]).value
	}
	e := &lruEntry[V]{key: key, value: c.fresh()}
	c.byKey[key] = c.order.PushFront(e)
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byKey, last.Value.(*lruEntry[V]).key)
	}
	return e.value
}

// len is the number of values kept.
func (c *lru[V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
