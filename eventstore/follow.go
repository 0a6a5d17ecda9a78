package eventstore

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Follow reads every commit on the subjects filters match, from stream
// sequence from on, and hands each to apply with its events, in stream
// order, until ctx ends (nil) or the consumer fails. caughtUp is called
// (once per Follow) when apply has had every commit that was in the
// stream when the consumer started, so a reader knows when its fold is
// current; with no such commit it is called at once.
//
// An ordered consumer detects gaps and recreates itself from the last
// sequence it delivered, so no commit is skipped. Its consumer is deleted
// when Follow returns, so a reader that goes away (a client of an event
// stream) leaves nothing on the server; the inactive threshold only
// covers a delete that does not get through.
func (s *Store) Follow(ctx context.Context, filters []string, from uint64, apply func(seq uint64, evs []Event), caughtUp func()) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cons, err := s.stream.OrderedConsumer(cctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    filters,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       max(from, 1),
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("follow %v from seq %d: %w", filters, from, classify(err))
	}
	defer s.deleteOrdered(ctx, cons)
	info, err := cons.Info(cctx)
	if err != nil {
		return fmt.Errorf("follow %v from seq %d: %w", filters, from, classify(err))
	}
	pending := info.NumPending
	if pending == 0 && caughtUp != nil {
		caughtUp()
		caughtUp = nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		return fmt.Errorf("follow %v from seq %d: %w", filters, from, classify(err))
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("follow %v: %w", filters, classify(err))
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("follow %v: %w", filters, err)
		}
		evs, err := DecodeCommit(meta.Sequence.Stream, m.Data())
		if err != nil {
			return fmt.Errorf("follow %v: %w", filters, err)
		}
		apply(meta.Sequence.Stream, evs)
		if caughtUp != nil && meta.NumPending == 0 {
			caughtUp()
			caughtUp = nil
		}
	}
}

// deleteOrdered deletes the consumer an ordered consumer uses now (it
// makes a new one after a gap, and deletes the old one itself).
func (s *Store) deleteOrdered(ctx context.Context, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = s.stream.DeleteConsumer(dctx, info.Name)
}
