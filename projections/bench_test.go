package projections

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// Benchmarks (go test -bench . -run '^$' ./projections/):
//
//	BenchmarkProjectionThroughput  events/s into ClickHouse for a stream of
//	                               DMGR_BENCH_EVENTS events (default 1,000,000)
//	BenchmarkProjectionLag         append-to-visible lag p50/p99 at
//	                               DMGR_BENCH_RATE events/s (default 2,000) for
//	                               DMGR_BENCH_SECONDS (default 20)
//	BenchmarkAuditQuery            audit page latency p50/p95 over
//	                               DMGR_BENCH_AUDIT_ROWS synthetic events
//	                               (default 10,000,000), by cluster and by time range
//
// The throughput benchmark logs the CPU time the test process (projector
// and embedded NATS) and ClickHouse used. On a shared machine that time
// varies with the neighbours; instructions retired do not, so to compare
// two builds count them over the projection alone with perf:
//
//	mkfifo /tmp/ctl
//	DMGR_BENCH_PERF_CTL=/tmp/ctl perf stat -a -e instructions,cycles --delay=-1 \
//	    --control=fifo:/tmp/ctl -- ./projections.test -test.run '^$' \
//	    -test.bench BenchmarkProjectionThroughput -test.benchtime 1x
//
// DMGR_BENCH_CPUPROFILE=file profiles the projection alone.

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// generator makes a realistic event stream: machines registered, then
// clusters whose operations run their steps (started, succeeded) and
// finish, interleaved across clusters as a busy installation's would be.
type generator struct {
	clusters int
	steps    int // steps per operation
	versions map[string]uint64
	state    []clusterGen
	hosts    []string
	now      time.Time
	// groupOf, when set, is the group that owns an aggregate (its
	// commits name it).
	groupOf func(typ, id string) string
}

type clusterGen struct {
	name string
	op   string
	next int // 0: request an operation; 1..2*steps: step events; 2*steps+1: finish
}

func newGenerator(clusters, steps int) *generator {
	g := &generator{clusters: clusters, steps: steps, versions: map[string]uint64{}, now: time.Now().UTC()}
	for i := 0; i < 100; i++ {
		g.hosts = append(g.hosts, fmt.Sprintf("10.0.%d.%d", i/250, 1+i%250))
	}
	for i := 0; i < clusters; i++ {
		g.state = append(g.state, clusterGen{name: fmt.Sprintf("cluster-%04d", i)})
	}
	return g
}

type genCommit struct {
	commit eventstore.Commit // the envelope (its events are in body)
	body   []byte
	events int
}

func (g *generator) commit(typ, id, actor, op string, evs ...domain.Event) genCommit {
	c := eventstore.Commit{CommitID: uuid.NewString(), AggregateType: typ, AggregateID: id, Time: g.now, Actor: actor, OperationID: op}
	if g.groupOf != nil {
		c.Group = g.groupOf(typ, id)
	}
	g.now = g.now.Add(time.Millisecond)
	for _, e := range evs {
		p, _ := json.Marshal(e)
		c.Events = append(c.Events, eventstore.NewEvent{Type: e.EventType(), SchemaVersion: 1, Payload: p})
	}
	b, _ := eventstore.EncodeCommit(c, g.versions[typ+"/"+id])
	g.versions[typ+"/"+id] += uint64(len(evs))
	c.Events = nil
	return genCommit{commit: c, body: b, events: len(evs)}
}

// machines registers the hosts.
func (g *generator) machines() []genCommit {
	var out []genCommit
	for _, h := range g.hosts {
		group := ""
		if g.groupOf != nil {
			group = g.groupOf(domain.AggregateMachine, h)
		}
		out = append(out, g.commit(domain.AggregateMachine, h, "admin", uuid.NewString(), domain.MachineRegistered{Host: h, SSHPort: 22,
			User: "tidb", Credential: domain.CredentialRef{ID: "cred-" + h, Kind: "password"}, HostKey: domain.HostKey{Key: "ssh-ed25519 AAAA", Fingerprint: "SHA256:x"},
			Group: group}))
	}
	return out
}

// next is the next commit of cluster i.
func (g *generator) next(i int) genCommit {
	c := &g.state[i]
	host := g.hosts[i%len(g.hosts)]
	defer func() { c.next = (c.next + 1) % (2*g.steps + 2) }()
	switch {
	case c.next == 0:
		c.op = uuid.NewString()
		var plan []domain.Step
		for s := 0; s < g.steps; s++ {
			st := domain.Step{ID: fmt.Sprintf("step-%02d/%s:%d", s, host, 8261), Kind: domain.StepStart, Host: host,
				Instance: host + ":8261", Role: domain.RoleMaster}
			if s > 0 {
				st.Needs = []string{plan[s-1].ID}
			}
			plan = append(plan, st)
		}
		req := domain.OperationRequested{ID: c.op, Kind: domain.OperationDeploy, Cluster: c.name, Plan: plan}
		if g.versions[domain.AggregateCluster+"/"+c.name] == 0 {
			return g.commit(domain.AggregateCluster, c.name, "alice", c.op, domain.ClusterDeployRequested{Name: c.name, Version: "v8.1.0",
				PackageID: "dm-v8.1.0-linux-amd64", Topology: "master_servers:\n  - host: " + host + "\n",
				Instances: []domain.Instance{{ID: host + ":8261", Name: "dm-" + host + "-8261", Role: domain.RoleMaster, Host: host, Port: 8261, PeerPort: 8291,
					DeployDir: "/dm/deploy/dm-master-8261", DataDir: "/dm/data/dm-master-8261", LogDir: "/dm/deploy/dm-master-8261/log"}}}, req)
		}
		return g.commit(domain.AggregateCluster, c.name, "alice", c.op, req)
	case c.next <= 2*g.steps:
		s := (c.next - 1) / 2
		step := fmt.Sprintf("step-%02d/%s:%d", s, host, 8261)
		if c.next%2 == 1 {
			return g.commit(domain.AggregateCluster, c.name, "dmgr-coordinator", c.op, domain.StepStarted{Operation: c.op, Step: step, Attempt: 1, Host: host, Agent: "agent-1"})
		}
		return g.commit(domain.AggregateCluster, c.name, "dmgr-coordinator", c.op, domain.StepSucceeded{Operation: c.op, Step: step, Attempt: 1, Host: host,
			Agent: "agent-1", DurationMS: 120, Stdout: "started"})
	default:
		return g.commit(domain.AggregateCluster, c.name, "dmgr-coordinator", c.op, domain.OperationSucceeded{ID: c.op, Attempt: 1})
	}
}

// appendAsync appends a generated commit as the service appends: the same
// message, headers and all, on the condition that the stream's last
// commit is last; it does not wait for the ack.
func appendAsync(js jetstream.JetStream, c genCommit, last uint64) (jetstream.PubAckFuture, error) {
	msg, opts := eventstore.Message(c.commit, c.body, eventstore.Expect{LastSeq: last, Filter: eventstore.AllSubjects})
	return js.PublishMsgAsync(msg, opts...)
}

// streamLast is the sequence of the stream's last commit.
func streamLast(b testing.TB, js jetstream.JetStream) uint64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, eventstore.StreamName)
	must(b, err, "stream")
	info, err := st.Info(ctx)
	must(b, err, "stream info")
	return info.State.LastSeq
}

// publish appends commits to the stream, in order, without waiting for
// each ack.
func publish(b testing.TB, js jetstream.JetStream, commits []genCommit) {
	b.Helper()
	const window = 1000
	last := streamLast(b, js)
	var futures []jetstream.PubAckFuture
	flush := func() {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatalf("publish: %v", err)
			}
		}
		futures = futures[:0]
	}
	for _, c := range commits {
		f, err := appendAsync(js, c, last)
		if err != nil {
			b.Fatalf("publish: %v", err)
		}
		last++
		futures = append(futures, f)
		if len(futures) == window {
			flush()
		}
	}
	flush()
}

// BenchmarkProjectionThroughput projects a stream of DMGR_BENCH_EVENTS
// events into fresh tables, as a rebuild or a catch-up does, and reports
// events per second into ClickHouse.
func BenchmarkProjectionThroughput(b *testing.B) {
	total := envInt("DMGR_BENCH_EVENTS", 1_000_000)
	e := newEnv(b, "")
	g := newGenerator(envInt("DMGR_BENCH_CLUSTERS", 500), 20)
	commits := g.machines()
	events := len(commits)
	for i := 0; events < total; i++ {
		c := g.next(i % g.clusters)
		commits = append(commits, c)
		events += c.events
	}
	began := time.Now()
	publish(b, e.js, commits)
	b.Logf("stream: %d events in %d commits, appended in %s", events, len(commits), time.Since(began).Round(time.Millisecond))
	head := e.head()
	b.ResetTimer()
	var took time.Duration
	for i := 0; i < b.N; i++ {
		st := e.newStore()
		st.db = fmt.Sprintf("%s_tp%d", e.db, i)
		chPid := sharedClickHouse(b).Pid()
		selfCPU, chCPU := processCPU(os.Getpid()), processCPU(chPid)
		stopProfile := profileCPU(b, os.Getenv("DMGR_BENCH_CPUPROFILE"))
		stopPerf := perfWindow(b)
		began := time.Now()
		p := e.start(st, func(c *ProjectorConfig) {
			c.MaxWait = 200 * time.Millisecond
			c.MaxBatch = envInt("DMGR_BENCH_BATCH", 0) // 0: the default
		})
		ctx, cancel := context.WithTimeout(e.ctx, 30*time.Minute)
		if _, err := st.WaitFor(ctx, head); err != nil {
			b.Fatalf("projections did not catch up: %v", err)
		}
		cancel()
		took += time.Since(began)
		b.StopTimer()
		stopPerf()
		stopProfile()
		b.Logf("run %d: CPU used while projecting: this process (projector and NATS) %.1f s, ClickHouse %.1f s",
			i, (processCPU(os.Getpid()) - selfCPU).Seconds(), (processCPU(chPid) - chCPU).Seconds())
		e.stop(p)
		n, err := st.EventCount(e.ctx)
		must(b, err, "count")
		if n != uint64(events) {
			b.Fatalf("ClickHouse has %d events, the stream %d", n, events)
		}
		m := st.metrics
		b.Logf("run %d: %d events in %s: %.0f events/s; %d batches, mean batch %.0f events, mean insert %.0f ms",
			i, events, time.Since(began).Round(time.Millisecond), float64(events)/time.Since(began).Seconds(), m.batches.Load(),
			float64(m.events.Load())/float64(max(m.batches.Load(), 1)), 1000*m.insertDur.sum/float64(max(m.insertDur.n, 1)))
		_ = e.conn.Exec(e.ctx, "DROP DATABASE IF EXISTS "+st.db)
		b.StartTimer()
	}
	b.ReportMetric(float64(events)*float64(b.N)/took.Seconds(), "events/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkProjectionLag appends DMGR_BENCH_RATE events/s for
// DMGR_BENCH_SECONDS and measures, for every commit, the time from its
// append to the moment a read that waits for its commit_seq (WaitFor)
// sees it.
func BenchmarkProjectionLag(b *testing.B) {
	rate := envInt("DMGR_BENCH_RATE", 2000)
	seconds := envInt("DMGR_BENCH_SECONDS", 20)
	e := newEnv(b, "")
	e.start(e.store, func(c *ProjectorConfig) { c.MaxWait = 0 }) // the default
	g := newGenerator(200, 20)
	publish(b, e.js, g.machines())
	e.caughtUp(e.store, time.Minute)
	b.ResetTimer()
	var all []time.Duration
	for n := 0; n < b.N; n++ {
		type sent struct {
			seq uint64
			at  time.Time
		}
		var mu sync.Mutex
		var pending []sent
		var lags []time.Duration
		done := make(chan struct{})
		// The observer: every time the local watermark moves, the commits
		// at or below it are visible.
		go func() {
			defer close(done)
			for {
				_, seq, changed := e.store.local.get()
				now := time.Now()
				mu.Lock()
				i := 0
				for i < len(pending) && pending[i].seq <= seq {
					lags = append(lags, now.Sub(pending[i].at))
					i++
				}
				pending = pending[i:]
				finished := len(pending) == 0 && len(lags) > 0 && lags[len(lags)-1] < 0
				mu.Unlock()
				if finished {
					return
				}
				select {
				case <-changed:
				case <-time.After(100 * time.Millisecond):
				case <-e.ctx.Done():
					return
				}
			}
		}()
		// The appender: every 10 ms, rate/100 commits of one event each.
		tick := time.NewTicker(10 * time.Millisecond)
		per := max(rate/100, 1)
		end := time.Now().Add(time.Duration(seconds) * time.Second)
		i := 0
		last := streamLast(b, e.js)
		var futures []jetstream.PubAckFuture
		var times []time.Time
		for time.Now().Before(end) {
			<-tick.C
			futures, times = futures[:0], times[:0]
			for k := 0; k < per; k++ {
				c := g.next(i % g.clusters)
				i++
				f, err := appendAsync(e.js, c, last)
				if err != nil {
					b.Fatalf("publish: %v", err)
				}
				last++
				futures = append(futures, f)
				times = append(times, time.Now())
			}
			for k, f := range futures {
				select {
				case ack := <-f.Ok():
					mu.Lock()
					pending = append(pending, sent{ack.Sequence, times[k]})
					mu.Unlock()
				case err := <-f.Err():
					b.Fatalf("publish: %v", err)
				}
			}
		}
		tick.Stop()
		e.caughtUp(e.store, time.Minute)
		mu.Lock()
		pending = append(pending, sent{0, time.Now().Add(time.Hour)}) // a marker that ends the observer
		mu.Unlock()
		<-done
		mu.Lock()
		lags = lags[:len(lags)-1]
		all = append(all, lags...)
		b.Logf("run %d: %d commits at %d/s for %ds", n, len(lags), rate, seconds)
		mu.Unlock()
	}
	slices.Sort(all)
	q := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkAuditQuery measures audit pages (100 events, newest first) over
// DMGR_BENCH_AUDIT_ROWS events. The rows are synthetic, written into the
// events table with INSERT … SELECT FROM numbers() (projecting 10 M
// events through JetStream would take most of the benchmark's time): 1,000
// clusters, 30 days, 100 hosts, the real schema and the real query path.
func BenchmarkAuditQuery(b *testing.B) {
	rows := envInt("DMGR_BENCH_AUDIT_ROWS", 10_000_000)
	e := newEnv(b, "")
	gen, err := e.store.EnsureSchema(e.ctx)
	must(b, err, "schema")
	const clusters, days = 1000, 30
	start := time.Now().UTC().Add(-days * 24 * time.Hour).Truncate(time.Hour)
	spacing := float64(days*24*3600) / float64(rows)
	began := time.Now()
	q := fmt.Sprintf(`INSERT INTO %s (seq, idx, commit_id, event_id, type, schema_version, aggregate_type, aggregate_id,
		aggregate_version, time, time_ns, actor, operation, correlation_id, causation_id, cluster, machines, step, outcome, payload)
		SELECT number + 1, 0, toString(generateUUIDv4()), toString(generateUUIDv4()),
			['StepStarted','StepSucceeded','StepFailed','OperationRequested','OperationSucceeded','MachineRegistered'][number %% 6 + 1], 1,
			'cluster', concat('cluster-', toString(number %% %d)), intDiv(number, %d) + 1,
			toDateTime(%d + toUInt32(number * %f)), toUInt32((number * 7919) %% 1000000000),
			['alice','bob','dmgr-coordinator','admin'][number %% 4 + 1], concat('op-', toString(intDiv(number, 42))), '', '',
			concat('cluster-', toString(number %% %d)), [concat('10.0.0.', toString(number %% 100))],
			concat('start/10.0.0.', toString(number %% 100), ':8261'), ['', 'succeeded', 'failed', '', 'succeeded', ''][number %% 6 + 1],
			concat('{"operation":"op-', toString(intDiv(number, 42)), '","step":"start/10.0.0.', toString(number %% 100),
				':8261","attempt":1,"host":"10.0.0.', toString(number %% 100), '","agent":"agent-1","duration_ms":', toString(number %% 5000), '}')
		FROM numbers(%d)`,
		table(e.db, tableEvents, gen), clusters, clusters, start.Unix(), spacing, clusters, rows)
	must(b, e.conn.Exec(e.ctx, q), "load synthetic events")
	b.Logf("loaded %d synthetic events in %s", rows, time.Since(began).Round(time.Millisecond))
	// Progress, so that the store answers without waiting.
	must(b, recordProgress(e.ctx, e.conn, e.db, gen, uint64(rows)), "progress")

	rng := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		name string
		q    func() AuditQuery
	}{
		{"by cluster", func() AuditQuery { return AuditQuery{Cluster: fmt.Sprintf("cluster-%d", rng.IntN(clusters))} }},
		{"by time range (1 h)", func() AuditQuery {
			from := start.Add(time.Duration(rng.IntN(days*24-1)) * time.Hour)
			return AuditQuery{Since: from, Until: from.Add(time.Hour)}
		}},
		{"by time range (1 day)", func() AuditQuery {
			from := start.Add(time.Duration(rng.IntN(days-1)) * 24 * time.Hour)
			return AuditQuery{Since: from, Until: from.Add(24 * time.Hour)}
		}},
		{"by cluster and time range (1 day)", func() AuditQuery {
			from := start.Add(time.Duration(rng.IntN(days-1)) * 24 * time.Hour)
			return AuditQuery{Cluster: fmt.Sprintf("cluster-%d", rng.IntN(clusters)), Since: from, Until: from.Add(24 * time.Hour)}
		}},
		{"by cluster, second page", func() AuditQuery {
			q := AuditQuery{Cluster: fmt.Sprintf("cluster-%d", rng.IntN(clusters))}
			p, err := e.store.Audit(e.ctx, q)
			must(b, err, "first page")
			q.Cursor = p.NextCursor
			return q
		}},
		{"by machine", func() AuditQuery { return AuditQuery{Machine: fmt.Sprintf("10.0.0.%d", rng.IntN(100))} }},
		{"newest, no filter", func() AuditQuery { return AuditQuery{} }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var lat []time.Duration
			for i := 0; i < b.N; i++ {
				q := c.q()
				t0 := time.Now()
				p, err := e.store.Audit(e.ctx, q)
				lat = append(lat, time.Since(t0))
				must(b, err, "audit")
				if len(p.Events) == 0 {
					b.Fatalf("%s: empty page for %+v", c.name, q)
				}
			}
			slices.Sort(lat)
			at := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
			b.ReportMetric(at(0.5), "p50-ms")
			b.ReportMetric(at(0.95), "p95-ms")
		})
	}
}

// BenchmarkFold is the projector's own work per event, without JetStream
// or ClickHouse: decoding commits (in parallel) and folding them into rows,
// in batches of 10,000 commits.
func BenchmarkFold(b *testing.B) {
	g := newGenerator(500, 20)
	var raw []genCommit
	for i := 0; len(raw) < 50000; i++ {
		raw = append(raw, g.next(i%500))
	}
	b.ResetTimer()
	events := 0
	for n := 0; n < b.N; n++ {
		f := newFolder(nil, zerologNop, func(eventstore.Event, error) {})
		for start := 0; start < len(raw); start += 10000 {
			part := raw[start:min(start+10000, len(raw))]
			batch := make([]commit, len(part))
			for i := range part {
				batch[i].seq = uint64(start + i + 1)
			}
			decodeAll(batch, func(i int) []byte { return part[i].body }, func(_ uint64, err error) { b.Fatal(err) })
			rows, err := f.project(context.Background(), batch)
			if err != nil {
				b.Fatal(err)
			}
			events += len(rows.events)
		}
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

var zerologNop = zerolog.Nop()

// profileCPU writes a CPU profile of the projection alone (not of the
// stream's set-up) to path, when set, until the returned func is called.
func profileCPU(b *testing.B, path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	must(b, err, "cpu profile")
	must(b, pprof.StartCPUProfile(f), "start cpu profile")
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}

// perfWindow, when DMGR_BENCH_PERF_CTL names the control fifo of a
// `perf stat --delay=-1 --control=fifo:FIFO` that runs the benchmark,
// has perf count only while the projection runs: instructions retired
// compare two builds on a machine whose neighbours make time useless.
func perfWindow(b *testing.B) (stop func()) {
	path := os.Getenv("DMGR_BENCH_PERF_CTL")
	if path == "" {
		return func() {}
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	must(b, err, "perf control fifo")
	_, err = f.WriteString("enable\n")
	must(b, err, "enable perf")
	return func() {
		_, err := f.WriteString("disable\n")
		must(b, err, "disable perf")
		_ = f.Close()
	}
}

// processCPU is the user and system CPU time process pid has used so far
// (0 when it cannot be read).
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command, which is in parentheses and may hold
	// spaces: state is field 3, utime 14 and stime 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(ut+stime) * time.Second / 100 // USER_HZ is 100 on Linux
}
