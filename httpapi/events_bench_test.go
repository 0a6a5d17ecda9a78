package httpapi_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/service"
)

// BenchmarkEventStreamLatency measures the time from a step's result being
// committed (the append of a StepSucceeded commit to the operation's
// cluster, as the coordinator makes it) to each watcher of the operation's
// event stream (GET /api/v1/operations/{id}/events, over HTTP) having read
// its line. The clock starts before the append, so the figures include
// the append's own round trip (append-p50-ms). With 50 watchers every
// watcher's latency is counted.
func BenchmarkEventStreamLatency(b *testing.B) {
	for _, watchers := range []int{1, 50} {
		b.Run(fmt.Sprintf("watchers=%d", watchers), func(b *testing.B) {
			s := newStack(b, pkgstore.DefaultLimits())
			s.fixtures()
			op := s.deploySecret("prod-a")
			step := "check_host/198.18.0.11"
			if c, _, _, err := s.svc.ClusterState(b.Context(), "prod-a"); err == nil && len(c.Operations) > 0 {
				step = c.Operations[0].Plan[0].ID
			}

			// Each watcher reads its stream and reports every event's id
			// with the time it read it.
			type seen struct {
				id string
				at time.Time
			}
			got := make(chan seen, 1024)
			var wg sync.WaitGroup
			for range watchers {
				st := s.mustEvents("/api/v1/operations/" + op + "/events")
				st.nextOf(domain.TypeOperationRequested) // the replay is read
				wg.Go(func() {
					for {
						ev, err := st.next()
						if err != nil {
							return
						}
						got <- seen{ev.ID, time.Now()}
					}
				})
			}
			payload, err := json.Marshal(domain.StepSucceeded{Operation: op, Step: step, Attempt: 1, Host: "198.18.0.11",
				Agent: "agent-b", DurationMS: 12, Stdout: "ok"})
			if err != nil {
				b.Fatal(err)
			}
			var lat, appendLat []time.Duration
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				seq, err := s.store.Append(b.Context(), eventstore.Commit{CommitID: uuid.NewString(), AggregateType: domain.AggregateCluster,
					AggregateID: "prod-a", Time: start, Actor: service.CoordinatorActor, OperationID: op, FencingToken: 1,
					Events: []eventstore.NewEvent{{Type: domain.TypeStepSucceeded, Payload: payload}}}, eventstore.Expect{Any: true})
				if err != nil {
					b.Fatal(err)
				}
				appendLat = append(appendLat, time.Since(start))
				want := fmt.Sprintf("%d.0", seq)
				for n := 0; n < watchers; {
					select {
					case e := <-got:
						if e.id == want {
							lat = append(lat, e.at.Sub(start))
							n++
						}
					case <-time.After(30 * time.Second):
						b.Fatalf("event %s did not reach the watchers in 30 s (%d of %d)", want, n, watchers)
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(ms(percentile(lat, 50)), "p50-ms")
			b.ReportMetric(ms(percentile(lat, 99)), "p99-ms")
			b.ReportMetric(ms(percentile(appendLat, 50)), "append-p50-ms")
		})
	}
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
