package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/coordinator"
	"github.com/dmgr/dmgr/internal/embedded"
	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/testenv"
)

// history writes a realistic event history straight into the stream:
// machines registered, then clusters whose operations were requested
// (a command: no fencing token), led, ran their steps and succeeded or
// failed (the coordinator's commits, with a token), and a few clusters
// whose last operation still runs.
type history struct {
	now      time.Time
	versions map[string]uint64
	commits  []historyCommit
}

type historyCommit struct {
	commit eventstore.Commit
	body   []byte
}

// benchToken is the fencing token of the history's coordinator commits:
// a revision older than any the benchmark's etcd hands out later.
const benchToken = 1

func (h *history) add(tb testing.TB, typ, id, actor, op string, token int64, evs ...domain.Event) {
	tb.Helper()
	c := eventstore.Commit{CommitID: uuid.NewString(), AggregateType: typ, AggregateID: id, Time: h.now, Actor: actor,
		OperationID: op, FencingToken: token}
	h.now = h.now.Add(time.Millisecond)
	for _, e := range evs {
		p, err := json.Marshal(e)
		if err != nil {
			tb.Fatal(err)
		}
		c.Events = append(c.Events, eventstore.NewEvent{Type: e.EventType(), SchemaVersion: 1, Payload: p})
	}
	body, err := eventstore.EncodeCommit(c, h.versions[typ+"/"+id])
	if err != nil {
		tb.Fatal(err)
	}
	h.versions[typ+"/"+id] += uint64(len(evs))
	h.commits = append(h.commits, historyCommit{commit: c, body: body})
}

// operation adds one operation of a cluster of steps no-op steps: its
// request, the leadership, the steps started and finished, and its
// outcome; it stops after the first `upTo` step events when upTo >= 0
// (the operation still runs).
func (h *history) operation(tb testing.TB, cluster string, first bool, steps int, fail bool, upTo int) {
	op := uuid.NewString()
	plan := make([]domain.Step, steps)
	for s := range plan {
		plan[s] = domain.Step{ID: fmt.Sprintf("step-%d", s), Kind: domain.StepNoop}
		if s > 0 {
			plan[s].Needs = []string{plan[s-1].ID}
		}
	}
	kind := "restart"
	if first {
		kind = domain.OperationDeploy
	}
	req := domain.OperationRequested{ID: op, Kind: kind, Cluster: cluster, Plan: plan}
	if first {
		h.add(tb, domain.AggregateCluster, cluster, "alice", op, 0,
			domain.ClusterDeployRequested{Name: cluster, Version: "v8.1.0", PackageID: "dm-v8.1.0-linux-amd64"}, req)
	} else {
		h.add(tb, domain.AggregateCluster, cluster, "alice", op, 0, req)
	}
	h.add(tb, domain.AggregateCluster, cluster, "dmgr-coordinator", op, benchToken, domain.ClusterLeaderElected{Token: benchToken, Coordinator: "old-server"})
	for i := 0; i < 2*steps; i++ {
		if upTo >= 0 && i >= upTo {
			return
		}
		step := plan[i/2].ID
		switch {
		case i%2 == 0:
			h.add(tb, domain.AggregateCluster, cluster, "dmgr-coordinator", op, benchToken,
				domain.StepStarted{Operation: op, Step: step, Attempt: 1, Agent: "agent-1"})
		case fail && i == 2*steps-1:
			h.add(tb, domain.AggregateCluster, cluster, "dmgr-coordinator", op, benchToken,
				domain.StepFailed{Operation: op, Step: step, Attempt: 1, Agent: "agent-1", ExitCode: 1, Error: "exit status 1", DurationMS: 90})
		default:
			h.add(tb, domain.AggregateCluster, cluster, "dmgr-coordinator", op, benchToken,
				domain.StepSucceeded{Operation: op, Step: step, Attempt: 1, Agent: "agent-1", DurationMS: 120, Stdout: "ok"})
		}
	}
	if fail {
		h.add(tb, domain.AggregateCluster, cluster, "dmgr-coordinator", op, benchToken,
			domain.OperationFailed{ID: op, Attempt: 1, FailedSteps: []string{plan[steps-1].ID}, Error: "step failed"})
		return
	}
	h.add(tb, domain.AggregateCluster, cluster, "dmgr-coordinator", op, benchToken, domain.OperationSucceeded{ID: op, Attempt: 1})
}

// newHistory makes about total commits: machines, clusters clusters whose
// operations (steps steps each, one in seven failed) finished, and the
// first running clusters' last operation running.
func newHistory(tb testing.TB, total, machines, clusters, running, steps int) *history {
	h := &history{now: time.Now().UTC().Add(-24 * time.Hour), versions: map[string]uint64{}}
	for i := range machines {
		host := fmt.Sprintf("10.1.%d.%d", i/250, 1+i%250)
		h.add(tb, domain.AggregateMachine, host, "admin", uuid.NewString(), 0, domain.MachineRegistered{Host: host, Address: host,
			SSHPort: 22, User: "tidb", Credential: domain.CredentialRef{ID: "cred-" + host, Kind: domain.CredentialPassword},
			HostKey: domain.HostKey{Key: testenv.HostKey, Fingerprint: "SHA256:bench"}})
	}
	perOp := 2*steps + 3
	budget := total - len(h.commits) - running*(2+steps) // the running operations: request, leadership, half their step events
	for ops := 0; budget >= perOp; ops++ {
		h.operation(tb, fmt.Sprintf("c-%04d", ops%clusters), ops < clusters, steps, ops%7 == 6, -1)
		budget -= perOp
	}
	for c := range running {
		h.operation(tb, fmt.Sprintf("c-%04d", c), false, steps, false, steps)
	}
	return h
}

// publish appends the commits in order, each on the condition that the
// stream's last commit is the one before it, without waiting for each
// ack (a window of 1,000).
func (h *history) publish(tb testing.TB, ctx context.Context, js jetstream.JetStream) {
	tb.Helper()
	st, err := js.Stream(ctx, eventstore.StreamName)
	if err != nil {
		tb.Fatal(err)
	}
	last := st.CachedInfo().State.LastSeq
	var futures []jetstream.PubAckFuture
	flush := func() {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				tb.Fatalf("publish: %v", err)
			case <-ctx.Done():
				tb.Fatal(ctx.Err())
			}
		}
		futures = futures[:0]
	}
	for _, c := range h.commits {
		msg, opts := eventstore.Message(c.commit, c.body, eventstore.Expect{LastSeq: last, Filter: eventstore.AllSubjects})
		f, err := js.PublishMsgAsync(msg, opts...)
		if err != nil {
			tb.Fatalf("publish: %v", err)
		}
		last++
		futures = append(futures, f)
		if len(futures) == 1000 {
			flush()
		}
	}
	flush()
}

// BenchmarkRestartReady restarts `dmgr server` (in-process Main) over an
// event store of 100,000 commits (200 machines; 1,000 clusters whose
// operations of 4 steps finished, one in seven failed; 10 clusters whose
// last operation runs) while ClickHouse does not answer (an address
// nothing listens on), and measures the time from the start to the first
// /readyz 200 (ns/op; target: 5 s). lead-ms is the time until the
// coordinator leads the 10 running clusters, led-clusters how many
// clusters it led then (10: the idle ones are not campaigned for), and
// first-start-s the one-time cost of the first start over a history no
// coordinator has marked (it reads every commit's headers once).
//
//	go test -run '^$' -bench BenchmarkRestartReady -benchtime 5x ./cmd/dmgr/
func BenchmarkRestartReady(b *testing.B) {
	const (
		total, machines, clusters, running, steps = 100_000, 200, 1000, 10, 4
	)
	ctx := testenv.Context(b, 30*time.Minute)
	n := testenv.NATS(b)
	_, js := testenv.JetStream(b, n)
	etcdSrv, etcd := testenv.Etcd(b)
	if _, err := eventstore.Open(ctx, js, eventstore.Config{Replicas: 1}); err != nil {
		b.Fatal(err)
	}
	h := newHistory(b, total, machines, clusters, running, steps)
	seedStart := time.Now()
	h.publish(b, ctx, js)
	b.Logf("seeded %d commits in %s", len(h.commits), time.Since(seedStart).Round(time.Millisecond))
	var runningClusters []string
	for c := range running {
		runningClusters = append(runningClusters, fmt.Sprintf("c-%04d", c))
	}

	b.Setenv("DMGR_ADMIN_TOKEN", "bench-admin-token-0123456789")
	b.Setenv("DMGR_MASTER_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	args := append([]string{"--http-addr", "127.0.0.1:0", "--nats-url", n.URL(),
		"--nats-nkey-file", testenv.SeedFile(b, n, busauth.Server, ""), "--coordinator-id", "bench-server"},
		append(etcdSrv.Flags(embedded.EtcdServerUser), unreachableClickHouse(b)...)...)
	cfg, err := parseConfig("server", args, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	logs := &testenv.Buffer{}
	b.Cleanup(func() {
		if b.Failed() || os.Getenv("DMGR_BENCH_SHOW_LOG") != "" {
			b.Logf("server log (tail):\n%s", tailOf(logs.String(), 6000))
		}
	})

	start := func() (*Main, time.Duration) {
		return startUntilReady(b, ctx, cfg, zerolog.New(logs).Level(zerolog.InfoLevel))
	}
	// leadsRunning waits until the coordinator leads every running cluster.
	leadsRunning := func(m *Main) {
		for {
			leading := m.Coordinator.Leading()
			all := true
			for _, c := range runningClusters {
				if _, ok := leading[c]; !ok {
					all = false
				}
			}
			if all {
				return
			}
			if ctx.Err() != nil {
				b.Fatalf("leading %d clusters, not all of %v", len(leading), runningClusters)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// The first start reads the whole history once, marks every cluster a
	// command went to, and the leaders release the idle ones.
	first := time.Now()
	m, _ := start()
	leadsRunning(m)
	settled(b, ctx, js, etcd, running)
	firstStart := time.Since(first)
	if err := m.Close(); err != nil {
		b.Fatal(err)
	}

	var ready, lead []time.Duration
	var led []int
	b.ResetTimer()
	for range b.N {
		begin := time.Now()
		m, took := start()
		b.StopTimer()
		ready = append(ready, took)
		leadsRunning(m)
		lead = append(lead, time.Since(begin))
		led = append(led, len(m.Coordinator.Leading()))
		if err := m.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(ready)
	slices.Sort(lead)
	b.ReportMetric(float64(ready[len(ready)-1].Milliseconds()), "readyz-max-ms")
	b.ReportMetric(float64(lead[len(lead)/2].Milliseconds()), "lead-ms")
	b.ReportMetric(float64(slices.Max(led)), "led-clusters")
	b.ReportMetric(firstStart.Seconds(), "first-start-s")
	b.Logf("%d commits; /readyz after %v; running clusters led after %v, leading %v clusters then; first start settled in %s",
		len(h.commits), ready, lead, led, firstStart.Round(time.Millisecond))
}

// settled waits until the coordinators' discovery consumer has nothing
// pending and only the running clusters are marked active (a dmgr without
// that consumer is taken as settled at once).
func settled(b *testing.B, ctx context.Context, js jetstream.JetStream, etcd *clientv3.Client, running int) {
	b.Helper()
	for {
		cons, err := js.Consumer(ctx, eventstore.StreamName, coordinator.DiscoveryConsumer)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return
		}
		if err != nil {
			b.Fatal(err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		resp, err := etcd.Get(ctx, leadership.ActiveClustersPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			b.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 && resp.Count == int64(running) {
			return
		}
		if ctx.Err() != nil {
			b.Fatalf("not settled: %d pending, %d unacknowledged, %d active clusters", info.NumPending, info.NumAckPending, resp.Count)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkDevRestartReady restarts `dmgr dev` (in-process, without its
// agent) on one data directory and measures the time from the start to
// the first /readyz 200. Dev starts its own ClickHouse and waits until it
// answers, so this is about ClickHouse's start; the event store's size
// does not enter (BenchmarkRestartReady).
//
//	go test -run '^$' -bench BenchmarkDevRestartReady -benchtime 3x ./cmd/dmgr/
func BenchmarkDevRestartReady(b *testing.B) {
	testenv.RequireClickHouse(b)
	dir := b.TempDir()
	cfg, err := parseConfig("dev", []string{"--data-dir", dir, "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0",
		"--etcd-client-addr", "127.0.0.1:0", "--etcd-peer-addr", "127.0.0.1:0", "--agent=false"}, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	ctx := testenv.Context(b, 10*time.Minute)
	start := func() (*Main, time.Duration) { return startUntilReady(b, ctx, cfg, zerolog.Nop()) }
	m, _ := start() // the first start creates the data directory
	if err := m.Close(); err != nil {
		b.Fatal(err)
	}
	var ready []time.Duration
	b.ResetTimer()
	for range b.N {
		m, took := start()
		b.StopTimer()
		ready = append(ready, took)
		if err := m.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(slices.Max(ready).Milliseconds()), "readyz-max-ms")
	b.Logf("/readyz after %v", ready)
}

// startUntilReady runs a server of cfg and returns it once /readyz answers
// 200, with the time from the start that took.
func startUntilReady(b *testing.B, ctx context.Context, cfg config, log zerolog.Logger) (*Main, time.Duration) {
	b.Helper()
	begin := time.Now()
	m := NewMain(cfg, log, io.Discard)
	if err := m.Run(ctx); err != nil {
		_ = m.Close()
		b.Fatal(err)
	}
	for {
		resp, err := http.Get(m.URL + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m, time.Since(begin)
			}
		}
		if ctx.Err() != nil {
			b.Fatal("never ready")
		}
		time.Sleep(2 * time.Millisecond)
	}
}
