package service

import (
	"cmp"
	"container/list"
	"context"
	"fmt"
	"sync"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// snapshot is one aggregate folded up to a stream position: what a
// decision reads, and what its append then expects.
type snapshot[T any] struct {
	state   T
	exists  bool   // some event was folded in
	lastSeq uint64 // stream sequence of the last commit folded in
	version uint64 // the aggregate's version: events folded in
}

// expect is the append condition of a decision on s: the aggregate has no
// commit after the ones folded in.
func (s snapshot[T]) expect() eventstore.Expect {
	return eventstore.Expect{LastSeq: s.lastSeq, Version: s.version}
}

// ptr is the state, or nil when the aggregate has no event.
func (s snapshot[T]) ptr() *T {
	if !s.exists {
		return nil
	}
	st := s.state
	return &st
}

// aggregates keeps the latest snapshots of one aggregate type in memory,
// the most recently read first, up to max of them. Reading one brings it
// up to date with the store: one direct get of the commits after the
// snapshot (usually none), so a read costs what changed since the last,
// not the aggregate's history. Snapshots are values whose states never
// change once handed out (the domain's folds copy before they change), so
// readers share them without locks.
type aggregates[T any] struct {
	store *eventstore.Store
	typ   string
	// fold folds events into a state, copying what it changes.
	fold func(state T, evs []domain.Event) T
	max  int

	mu   sync.Mutex
	lru  *list.List // of *cachedSnapshot[T], most recent first
	byID map[string]*list.Element
}

type cachedSnapshot[T any] struct {
	id   string
	snap snapshot[T]
}

func newAggregates[T any](store *eventstore.Store, typ string, max int, fold func(T, []domain.Event) T) *aggregates[T] {
	return &aggregates[T]{store: store, typ: typ, fold: fold, max: max, lru: list.New(), byID: map[string]*list.Element{}}
}

// evolveAll turns an event-by-event evolve into a fold.
func evolveAll[T any](evolve func(T, domain.Event) T) func(T, []domain.Event) T {
	return func(s T, evs []domain.Event) T {
		for _, e := range evs {
			s = evolve(s, e)
		}
		return s
	}
}

// foldClusterEvents folds a cluster's events copying each changed operation once.
func foldClusterEvents(c domain.Cluster, evs []domain.Event) domain.Cluster {
	f := domain.NewClusterFold(c)
	for _, e := range evs {
		f.Apply(e)
	}
	return f.State()
}

func (a *aggregates[T]) cached(id string) snapshot[T] {
	a.mu.Lock()
	defer a.mu.Unlock()
	if el, ok := a.byID[id]; ok {
		a.lru.MoveToFront(el)
		return el.Value.(*cachedSnapshot[T]).snap
	}
	return snapshot[T]{}
}

// keep stores s as id's snapshot unless a newer one is kept already.
func (a *aggregates[T]) keep(id string, s snapshot[T]) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if el, ok := a.byID[id]; ok {
		c := el.Value.(*cachedSnapshot[T])
		if s.lastSeq > c.snap.lastSeq {
			c.snap = s
		}
		a.lru.MoveToFront(el)
		return
	}
	a.byID[id] = a.lru.PushFront(&cachedSnapshot[T]{id: id, snap: s})
	for a.lru.Len() > a.max {
		last := a.lru.Back()
		a.lru.Remove(last)
		delete(a.byID, last.Value.(*cachedSnapshot[T]).id)
	}
}

// read returns id's snapshot brought up to date with the store.
func (a *aggregates[T]) read(ctx context.Context, id string) (snapshot[T], error) {
	s := a.cached(id)
	st, err := a.store.LoadSince(ctx, a.typ, id, s.lastSeq)
	if err != nil {
		return snapshot[T]{}, deadlineErr(ctx, fmt.Errorf("read %s %s: %w", a.typ, id, err))
	}
	if len(st.Events) == 0 {
		return s, nil
	}
	evs := make([]domain.Event, len(st.Events))
	for i, e := range st.Events {
		if evs[i], err = domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload); err != nil {
			return snapshot[T]{}, fmt.Errorf("read %s %s: seq %d: %w", a.typ, id, e.Seq, err)
		}
	}
	s = snapshot[T]{state: a.fold(s.state, evs), exists: true, lastSeq: st.LastSeq, version: st.Version()}
	a.keep(id, s)
	return s, nil
}

// readEach reads several aggregates at once (up to readParallelism
// requests in flight), keyed by id.
func (a *aggregates[T]) readEach(ctx context.Context, ids []string) (map[string]snapshot[T], error) {
	out := make(map[string]snapshot[T], len(ids))
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
	)
	sem := make(chan struct{}, readParallelism)
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			s, err := a.read(ctx, id)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				firstErr = cmp.Or(firstErr, err)
				return
			}
			out[id] = s
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

// readParallelism bounds the reads of one decision in flight at once.
const readParallelism = 16
