package eventstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// OperationRef is where an operation's commits are: what OperationIndex
// knows of one operation id.
type OperationRef struct {
	// Seq is the stream sequence of the first commit that carries the
	// operation's id, and AggregateType and AggregateID that commit's
	// aggregate.
	Seq           uint64
	AggregateType string
	AggregateID   string
	// Home is the id of the first aggregate of the index's home type (the
	// cluster, for dmgr) that a commit of the operation went to; "" when
	// none did (a command that completed in its commit on a machine or a
	// package).
	Home string
}

// OperationIndex maps operation ids to where their commits are, in
// memory, kept current by tailing the whole event stream with a
// headers-only ordered consumer: a commit's operation id and aggregate are
// in its headers (Message), so the tail never reads or decodes a body.
//
// Why it is exact, with any number of servers appending to the stream:
// the index is a fold of the stream's prefix [1, applied], and the stream
// is the only place operations come from. An operation's first commit and
// its home never change once committed, so an entry with a home is final
// and answers at once. When an id has no entry (or no home yet), Lookup
// reads the stream's last sequence L and waits until the tail has folded
// every commit up to L before it answers: every commit that was
// acknowledged (and so every 202 sent, by this server or another) before
// the lookup began has a sequence ≤ L, so "unknown" means unknown, not
// "not seen yet". Operations committed before the index existed are
// found the same way: the tail starts at sequence 1.
//
// Cost: a lookup is a map read, plus one stream-info request when the id
// is not (yet) known; it does not depend on how many operations or commits
// exist. Memory is one small entry per operation; start-up reads the
// headers of every commit once, in the background, and only lookups wait
// for it.
//
// The tail starts on the first Lookup and restarts on the next Lookup if
// it ended with an error (the error is what that earlier Lookup answers),
// so a lost connection degrades to errors and recovers, never to wrong
// answers. Close stops it.
type OperationIndex struct {
	store    *Store
	homeType string

	mu      sync.Mutex
	ops     map[string]OperationRef
	applied uint64        // stream sequence of the last commit folded in
	changed chan struct{} // closed and replaced when applied or running changes
	running bool
	closed  bool
	err     error // why the last tail ended
	cancel  context.CancelFunc
	done    chan struct{} // closed when the running tail has ended
}

// NewOperationIndex returns an index of the operations in s; homeType is
// the aggregate type whose id an operation's Home is ("cluster").
func (s *Store) NewOperationIndex(homeType string) *OperationIndex {
	return &OperationIndex{store: s, homeType: homeType, ops: map[string]OperationRef{}, changed: make(chan struct{})}
}

// Lookup returns where operation id's commits are, and false when no
// commit carried id before the lookup began.
func (x *OperationIndex) Lookup(ctx context.Context, id string) (OperationRef, bool, error) {
	if id == "" {
		return OperationRef{}, false, nil
	}
	if err := x.Start(); err != nil {
		return OperationRef{}, false, err
	}
	if ref, ok := x.get(id); ok && ref.Home != "" {
		return ref, true, nil
	}
	last, err := x.store.LastSeq(ctx)
	if err != nil {
		return OperationRef{}, false, fmt.Errorf("operation %s: %w", id, err)
	}
	if err := x.WaitFor(ctx, last); err != nil {
		return OperationRef{}, false, fmt.Errorf("operation %s: %w", id, err)
	}
	ref, ok := x.get(id)
	return ref, ok, nil
}

// WaitFor waits until the index has folded every commit up to seq.
func (x *OperationIndex) WaitFor(ctx context.Context, seq uint64) error {
	if err := x.Start(); err != nil {
		return err
	}
	for {
		x.mu.Lock()
		applied, running, terr, ch := x.applied, x.running, x.err, x.changed
		x.mu.Unlock()
		switch {
		case applied >= seq:
			return nil
		case !running && terr != nil:
			return fmt.Errorf("operation index at seq %d, waiting for %d: %w", applied, seq, terr)
		case !running:
			return fmt.Errorf("operation index at seq %d, waiting for %d: the index is closed", applied, seq)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("operation index at seq %d, waiting for %d: %w", applied, seq, ctx.Err())
		}
	}
}

// Applied is the stream sequence of the last commit folded in.
func (x *OperationIndex) Applied() uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.applied
}

// Close stops the tail and waits for it to end.
func (x *OperationIndex) Close() {
	x.mu.Lock()
	x.closed = true
	cancel, done := x.cancel, x.done
	x.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (x *OperationIndex) get(id string) (OperationRef, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	ref, ok := x.ops[id]
	return ref, ok
}

// Start runs the tail in the background unless it runs, from the commit
// after the last one folded in. Lookup starts it too.
func (x *OperationIndex) Start() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return errors.New("operation index: closed")
	}
	if x.running {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	x.running, x.err, x.cancel, x.done = true, nil, cancel, make(chan struct{})
	go x.tail(ctx, x.applied+1, x.done)
	return nil
}

func (x *OperationIndex) tail(ctx context.Context, from uint64, done chan struct{}) {
	defer close(done)
	err := x.follow(ctx, from)
	if ctx.Err() != nil {
		err = errors.New("operation index: closed")
	}
	x.mu.Lock()
	x.running, x.err = false, err
	x.broadcast()
	x.mu.Unlock()
}

// follow folds every commit from sequence from on, until ctx ends or the
// consumer fails.
func (x *OperationIndex) follow(ctx context.Context, from uint64) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// An ordered consumer detects gaps and recreates itself from the last
	// sequence it delivered, so no commit is skipped.
	cons, err := x.store.stream.OrderedConsumer(cctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		HeadersOnly:       true,
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("operation index: tail from seq %d: %w", from, classify(err))
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return fmt.Errorf("operation index: tail from seq %d: %w", from, classify(err))
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			return fmt.Errorf("operation index: tail after seq %d: %w", x.Applied(), classify(err))
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("operation index: tail after seq %d: %w", x.Applied(), err)
		}
		h := m.Headers()
		x.apply(meta.Sequence.Stream, h.Get(HeaderOperationID), h.Get(HeaderAggregateType), h.Get(HeaderAggregateID))
	}
}

// apply folds in the commit at seq.
func (x *OperationIndex) apply(seq uint64, op, aggType, aggID string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if seq <= x.applied {
		return // delivered again after a restart of the tail
	}
	x.applied = seq
	if op != "" {
		home := ""
		if aggType == x.homeType {
			home = aggID
		}
		switch ref, seen := x.ops[op]; {
		case !seen:
			x.ops[op] = OperationRef{Seq: seq, AggregateType: aggType, AggregateID: aggID, Home: home}
		case ref.Home == "" && home != "":
			ref.Home = home
			x.ops[op] = ref
		}
	}
	x.broadcast()
}

// broadcast wakes every WaitFor. x.mu is held.
func (x *OperationIndex) broadcast() {
	close(x.changed)
	x.changed = make(chan struct{})
}
