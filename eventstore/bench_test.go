package eventstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/testenv"
)

const (
	benchWriters    = 16
	benchAggregates = 64
)

// BenchmarkAppend compares appends with optimistic concurrency (16
// goroutines over 64 aggregates, each goroutine owning 4 of them so that
// every append is expected to succeed) with plain JetStream publishes of the
// same bytes on the same subjects, in one run against one embedded server.
//
//	go test ./eventstore -run '^$' -bench Append -benchtime 20000x
func BenchmarkAppend(b *testing.B) {
	n := testenv.NATS(b)
	_, js := testenv.JetStream(b, n)
	ctx := context.Background()
	s, err := eventstore.Open(ctx, js, eventstore.Config{Replicas: 1})
	if err != nil {
		b.Fatal(err)
	}
	payload := json.RawMessage(`{"instance":"dm-master-1","host":"198.18.0.11","port":8261,"note":"` + strings.Repeat("x", 300) + `"}`)
	// Warm the server and the connection up so that neither side below pays for it.
	for i := 0; i < 5000; i++ {
		if _, err := js.Publish(ctx, eventstore.Subject("warmup", fmt.Sprint(i%benchAggregates)), payload); err != nil {
			b.Fatal(err)
		}
	}

	b.Run("occ", func(b *testing.B) {
		run := uuid.NewString()[:8] // fresh aggregates for every b.N round
		runWriters(b, func(w, i int, last []uint64) error {
			agg := w*(benchAggregates/benchWriters) + i%(benchAggregates/benchWriters)
			id := fmt.Sprintf("%s-%d", run, agg)
			c := eventstore.Commit{CommitID: uuid.NewString(), AggregateType: "bench", AggregateID: id,
				Time: time.Now(), Actor: "bench", Events: []eventstore.NewEvent{{Type: "BenchHappened", Payload: payload}}}
			seq, err := s.Append(ctx, c, eventstore.Expect{LastSeq: last[agg]})
			last[agg] = seq
			return err
		})
	})
	// plain does what an append does but the concurrency check: the same
	// commit built and encoded for every publish, deduplicated by its id.
	b.Run("plain", func(b *testing.B) {
		run := uuid.NewString()[:8] // fresh aggregates for every b.N round
		runWriters(b, func(w, i int, _ []uint64) error {
			agg := w*(benchAggregates/benchWriters) + i%(benchAggregates/benchWriters)
			id := fmt.Sprintf("%s-%d", run, agg)
			c := eventstore.Commit{CommitID: uuid.NewString(), AggregateType: "bench", AggregateID: id,
				Time: time.Now(), Actor: "bench", Events: []eventstore.NewEvent{{Type: "BenchHappened", Payload: payload}}}
			body, err := eventstore.EncodeCommit(c, uint64(i))
			if err != nil {
				return err
			}
			_, err = js.Publish(ctx, eventstore.Subject("bench", id), body, jetstream.WithMsgID(c.CommitID))
			return err
		})
	})
}

// runWriters runs b.N operations over benchWriters goroutines and reports
// throughput and latency percentiles.
func runWriters(b *testing.B, op func(writer, i int, last []uint64) error) {
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < benchWriters; w++ {
		count := b.N / benchWriters
		if w < b.N%benchWriters {
			count++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := make([]uint64, benchAggregates)
			local := make([]time.Duration, 0, count)
			for i := 0; i < count; i++ {
				t0 := time.Now()
				if err := op(w, i, last); err != nil {
					b.Error(err)
					return
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "commits/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
