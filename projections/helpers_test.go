package projections

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/chserver"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testenv"
)

// The package's tests share one ClickHouse server (it takes seconds to
// start); each test has a database of its own. Tests that stop the server
// start their own.
var (
	sharedCH     *chserver.Server
	sharedCHErr  error
	sharedCHOnce sync.Once
	sharedCHDir  string
	dbCounter    atomic.Int64
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	code := m.Run()
	if sharedCH != nil {
		_ = sharedCH.Stop()
	}
	if sharedCHDir != "" {
		_ = os.RemoveAll(sharedCHDir)
	}
	os.Exit(code)
}

// testCHPassword is the password of user dmgr on every ClickHouse server
// these tests start (chserver.Options.Password).
const testCHPassword = "projections-test-password"

// testCH is the login of the tests' ClickHouse servers.
var testCH = chserver.Credentials{User: chserver.User, Password: testCHPassword}

// sharedClickHouse returns the shared server, or skips the test when
// clickhouse-server is not installed.
func sharedClickHouse(t testing.TB) *chserver.Server {
	t.Helper()
	sharedCHOnce.Do(func() {
		sharedCHDir, sharedCHErr = os.MkdirTemp("", "projections-ch-")
		if sharedCHErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		sharedCH, sharedCHErr = chserver.Start(ctx, chserver.Options{Dir: sharedCHDir, Password: testCHPassword, Log: zerolog.Nop()})
	})
	skipWithoutClickHouse(t, sharedCHErr)
	return sharedCH
}

func skipWithoutClickHouse(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, chserver.ErrNotInstalled) {
		testenv.SkipOrFail(t, "SKIP: %v", err)
		return
	}
	t.Fatalf("start clickhouse: %v", err)
}

func must(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// env is one test's world: NATS JetStream with the event store, the
// service that appends commands, and projections in a database of their
// own on a ClickHouse server.
type env struct {
	t        testing.TB
	ctx      context.Context
	natsURL  string
	natsSeed string // the server role's seed, for child processes
	js       jetstream.JetStream
	events   *eventstore.Store
	svc      *service.Service
	chAddr   string
	conn     driver.Conn
	db       string
	store    *Store
	log      zerolog.Logger

	mu      sync.Mutex
	running map[*Projector]context.CancelFunc
	done    map[*Projector]chan struct{}
}

func newEnv(t testing.TB, chAddr string) *env {
	t.Helper()
	if chAddr == "" {
		chAddr = sharedClickHouse(t).Addr()
	}
	n := testenv.NATS(t)
	_, js := testenv.JetStream(t, n)
	ctx := testenv.Context(t, 10*time.Minute)
	events, err := eventstore.Open(ctx, js, eventstore.Config{Replicas: 1})
	must(t, err, "open event store")
	vault, err := secrets.Open(ctx, js, bytes.Repeat([]byte{3}, secrets.KeySize), 1)
	must(t, err, "open vault")
	pkgs, err := pkgstore.Open(ctx, js, 1)
	must(t, err, "open package store")
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	if testing.Verbose() && os.Getenv("PROJECTIONS_DEBUG") != "" {
		log = log.Level(zerolog.DebugLevel)
	}
	e := &env{t: t, ctx: ctx, natsURL: n.URL(), natsSeed: testenv.SeedFile(t, n, busauth.Server, ""), js: js, events: events, chAddr: chAddr, log: log,
		svc:     service.New(service.Config{Store: events, Vault: vault, Packages: pkgs, PackageLimits: pkgstore.DefaultLimits(), Log: zerolog.Nop()}),
		running: map[*Projector]context.CancelFunc{}, done: map[*Projector]chan struct{}{}}
	e.conn, err = Dial(chAddr, testCH)
	must(t, err, "dial clickhouse")
	t.Cleanup(func() { _ = e.conn.Close() })
	e.db = fmt.Sprintf("t%d_%d", os.Getpid(), dbCounter.Add(1))
	e.store = e.newStore()
	t.Cleanup(func() {
		e.stopAll()
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if !t.Failed() {
			_ = e.conn.Exec(cctx, "DROP DATABASE IF EXISTS "+e.db)
		}
	})
	return e
}

// newStore is another Store on the same database, as another process
// would have.
func (e *env) newStore() *Store {
	s, err := New(e.conn, Options{Database: e.db, JS: e.js, Log: e.log, GenerationTTL: 200 * time.Millisecond, PollInterval: 10 * time.Millisecond})
	must(e.t, err, "projections store")
	return s
}

func (e *env) projectorConfig(st *Store) ProjectorConfig {
	return ProjectorConfig{Store: st, JS: e.js, Events: e.events, MaxWait: 10 * time.Millisecond, MaxBackoff: time.Second, Log: e.log}
}

// start runs a projector on st until the test ends or stop.
func (e *env) start(st *Store, mod ...func(*ProjectorConfig)) *Projector {
	cfg := e.projectorConfig(st)
	for _, m := range mod {
		m(&cfg)
	}
	p := NewProjector(cfg)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.Run(ctx)
	}()
	e.mu.Lock()
	e.running[p], e.done[p] = cancel, done
	e.mu.Unlock()
	return p
}

func (e *env) stop(p *Projector) {
	e.mu.Lock()
	cancel, done := e.running[p], e.done[p]
	delete(e.running, p)
	delete(e.done, p)
	e.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (e *env) stopAll() {
	e.mu.Lock()
	var ps []*Projector
	for p := range e.running {
		ps = append(ps, p)
	}
	e.mu.Unlock()
	for _, p := range ps {
		e.stop(p)
	}
}

// head is the stream's last sequence.
func (e *env) head() uint64 {
	e.t.Helper()
	seq, err := e.events.LastSeq(e.ctx)
	must(e.t, err, "stream last seq")
	return seq
}

// caughtUp waits until st has projected the whole stream.
func (e *env) caughtUp(st *Store, within time.Duration) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, within)
	defer cancel()
	want := e.head()
	if _, err := st.WaitFor(ctx, want); err != nil {
		got, _ := st.Seq(e.ctx)
		e.t.Fatalf("projections did not reach seq %d within %s (at %d): %v", want, within, got, err)
	}
}

// streamEvents counts the events in the stream (each commit holds one or more).
func (e *env) streamEvents() (events int, commits uint64) {
	e.t.Helper()
	st, err := e.events.LoadFilter(e.ctx, eventstore.AllSubjects)
	must(e.t, err, "load stream")
	return len(st.Events), st.LastSeq
}

// rawEventRows is the number of rows in the current events table, with
// the duplicates a replay left before merges.
func (e *env) rawEventRows(st *Store) uint64 {
	e.t.Helper()
	gen, err := st.Generation(e.ctx)
	must(e.t, err, "generation")
	var n uint64
	must(e.t, e.conn.QueryRow(e.ctx, "SELECT count() FROM "+table(e.db, tableEvents, gen)).Scan(&n), "count rows")
	return n
}

// allAudit pages through the audit trail with q and fails on a duplicate.
func (e *env) allAudit(st *Store, q AuditQuery) []AuditEvent {
	e.t.Helper()
	var out []AuditEvent
	seen := map[[2]uint64]bool{}
	for page := 0; ; page++ {
		p, err := st.Audit(e.ctx, q)
		must(e.t, err, "audit")
		for _, ev := range p.Events {
			k := [2]uint64{ev.Seq, uint64(ev.Index)}
			if seen[k] {
				e.t.Fatalf("audit page %d repeats event %d.%d (%s)", page, ev.Seq, ev.Index, ev.Type)
			}
			seen[k] = true
			if len(out) > 0 {
				last := out[len(out)-1]
				if last.Seq < ev.Seq || last.Seq == ev.Seq && last.Index <= ev.Index {
					e.t.Fatalf("audit is not newest first: %d.%d after %d.%d", ev.Seq, ev.Index, last.Seq, last.Index)
				}
			}
			out = append(out, ev)
		}
		if p.NextCursor == "" {
			return out
		}
		q.Cursor = p.NextCursor
	}
}

func jsonOf(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	must(t, err, "encode")
	return string(b)
}

// ---- scenario ----

// scenario drives commands through the service the way the API and the
// coordinator do: machines registered and removed, a package, two
// deploys, step reports with a failure, a retry, and success.
type scenario struct {
	e        *env
	prefix   string // of the machines' addresses
	clusters []string
	ops      []string
	machines []string
	n        int              // how many machines so far
	tokens   map[string]int64 // fencing token of each cluster's coordinator
}

func newScenario(e *env) *scenario {
	return &scenario{e: e, prefix: "198.18", tokens: map[string]int64{}}
}

// load registers machines (in 198.19.0.0/16) until stop is closed, the
// commands that keep arriving while a test does something else; it reports
// failed commands with t.Errorf.
func (e *env) load(every time.Duration, stop <-chan struct{}) (wait func() int) {
	var wg sync.WaitGroup
	var n atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(every):
			}
			host := fmt.Sprintf("198.19.%d.%d", i/250, 1+i%250)
			_, err := e.svc.RegisterMachine(e.ctx, service.Meta{Actor: []string{"carol", "erin"}[i%2]}, service.RegisterMachineRequest{
				Host: host, User: "tidb", Password: "pw", HostKey: testenv.HostKey})
			if err != nil {
				e.t.Errorf("register %s while the test runs: %v", host, err)
				return
			}
			n.Add(1)
		}
	}()
	return func() int { wg.Wait(); return int(n.Load()) }
}

func (s *scenario) meta(actor string) service.Meta { return service.Meta{Actor: actor} }

func (s *scenario) registerMachine(actor string) (string, service.Accepted) {
	s.e.t.Helper()
	s.n++
	host := fmt.Sprintf("%s.%d.%d", s.prefix, s.n/200, 10+s.n%200)
	acc, err := s.e.svc.RegisterMachine(s.e.ctx, s.meta(actor), service.RegisterMachineRequest{Host: host, User: "tidb",
		Password: "pw", HostKey: testenv.HostKey, Labels: domain.Labels{Zone: fmt.Sprintf("z%d", s.n%3)}})
	must(s.e.t, err, "register "+host)
	s.machines = append(s.machines, host)
	s.ops = append(s.ops, acc.OperationID)
	return host, acc
}

func (s *scenario) uploadPackage(version string) {
	s.e.t.Helper()
	acc, err := s.e.svc.UploadPackage(s.e.ctx, s.meta("admin"), service.UploadPackageRequest{Name: "dm", Version: version,
		Body: bytes.NewReader(testenv.DMPackage(s.e.t, version))})
	must(s.e.t, err, "upload "+version)
	s.ops = append(s.ops, acc.OperationID)
}

func (s *scenario) deploy(name, topology string) string {
	s.e.t.Helper()
	var acc service.Accepted
	err := retryBusy(func() error {
		var err error
		acc, err = s.e.svc.DeployCluster(s.e.ctx, s.meta("alice"), service.DeployClusterRequest{Name: name, Version: "v8.1.0", Topology: topology})
		return err
	})
	must(s.e.t, err, "deploy "+name)
	s.clusters = append(s.clusters, name)
	s.ops = append(s.ops, acc.OperationID)
	return acc.OperationID
}

// report sends an agent's report on a step, as the coordinator does.
func (s *scenario) report(cluster string, r domain.StepReport) {
	s.e.t.Helper()
	r.Token = s.tokens[cluster]
	if _, _, err := s.e.svc.ReportStep(s.e.ctx, cluster, r, r.Token); err != nil {
		s.e.t.Fatalf("report %s %s: %v", r.Operation, r.Step, err)
	}
}

// runSteps starts and finishes every step of op that has no state yet;
// fail names the steps that fail.
func (s *scenario) runSteps(cluster, op string, attempt int, fail map[string]bool, limit int) {
	s.e.t.Helper()
	view, err := s.e.svc.Operation(s.e.ctx, op)
	must(s.e.t, err, "operation "+op)
	done := 0
	for _, st := range view.Steps {
		if st.Status != "pending" || (limit > 0 && done >= limit) {
			continue
		}
		done++
		agent := fmt.Sprintf("agent-%d", done%3)
		s.report(cluster, domain.StepReport{Operation: op, Step: st.ID, Attempt: attempt, Agent: agent})
		if limit > 0 && done == limit {
			break // leave the last one running
		}
		if fail[st.ID] {
			s.report(cluster, domain.StepReport{Operation: op, Step: st.ID, Attempt: attempt, Agent: agent, Finished: true,
				ExitCode: 3, Error: "ssh: handshake failed", DurationMS: 1200, Stderr: "permission denied"})
			continue
		}
		s.report(cluster, domain.StepReport{Operation: op, Step: st.ID, Attempt: attempt, Agent: agent, Finished: true, OK: true,
			DurationMS: int64(10 * done), Stdout: "ok"})
	}
}

func topologyOn(hosts ...string) string {
	t := "global:\n  user: tidb\n  deploy_dir: /dm/deploy\n  data_dir: /dm/data\nmaster_servers:\n"
	for _, h := range hosts {
		t += "  - host: " + h + "\n"
	}
	t += "worker_servers:\n"
	for _, h := range hosts {
		t += "  - host: " + h + "\n"
	}
	return t
}

// run plays the whole scenario.
func (s *scenario) run() {
	s.e.t.Helper()
	var hosts []string
	for i := 0; i < 5; i++ {
		h, _ := s.registerMachine([]string{"admin", "bob"}[i%2])
		hosts = append(hosts, h)
	}
	s.uploadPackage("v8.1.0")
	opA := s.deploy("prod-a", topologyOn(hosts[0], hosts[1], hosts[2]))
	opB := s.deploy("prod.b", topologyOn(hosts[3]))
	// prod-a: one step fails, the operation fails, a retry succeeds.
	view, err := s.e.svc.Operation(s.e.ctx, opA)
	must(s.e.t, err, "operation")
	failing := map[string]bool{view.Steps[len(view.Steps)/2].ID: true}
	s.runSteps("prod-a", opA, 1, failing, 0)
	acc, err := s.e.svc.RetryOperation(s.e.ctx, s.meta("bob"), opA)
	must(s.e.t, err, "retry")
	_ = acc
	s.runSteps("prod-a", opA, 2, nil, 0)
	// prod.b: half done, one step running.
	s.runSteps("prod.b", opB, 1, nil, 4)
	// prod-c: a coordinator takes it over, runs part of the deploy, and
	// the deploy is cancelled while a step runs.
	opC := s.deploy("prod-c", topologyOn(hosts[4]))
	_, err = s.e.svc.TakeLeadership(s.e.ctx, "prod-c", opC, 7, "coordinator-a")
	must(s.e.t, err, "take leadership")
	s.tokens["prod-c"] = 7
	s.runSteps("prod-c", opC, 1, nil, 3)
	_, err = s.e.svc.CancelOperation(s.e.ctx, s.meta("carol"), opC)
	must(s.e.t, err, "cancel")
	view, err = s.e.svc.Operation(s.e.ctx, opC)
	must(s.e.t, err, "operation")
	for _, st := range view.Steps {
		if st.Status == domain.StepStatusRunning {
			s.report("prod-c", domain.StepReport{Operation: opC, Step: st.ID, Attempt: 1, Agent: st.Agent, Finished: true, OK: true})
		}
	}
	if view, _ = s.e.svc.Operation(s.e.ctx, opC); view.Status != domain.OperationStatusCancelled {
		s.e.t.Fatalf("prod-c's deploy is %s after the cancel, want cancelled", view.Status)
	}
	// A machine comes and goes.
	h, _ := s.registerMachine("admin")
	err = retryBusy(func() error {
		_, err := s.e.svc.RemoveMachine(s.e.ctx, s.meta("admin"), h)
		return err
	})
	must(s.e.t, err, "remove machine")
}

// sameAnswers checks that the projections answer every query as the
// service, which folds the event stream itself, does.
func (e *env) sameAnswers(st *Store) {
	e.t.Helper()
	ctx := e.ctx
	check := func(what string, want, got any, errW, errG error) {
		e.t.Helper()
		if errW != nil || errG != nil {
			if domain.ErrorCode(errW) != domain.ErrorCode(errG) {
				e.t.Fatalf("%s: service error %v, projections error %v", what, errW, errG)
			}
			return
		}
		if w, g := jsonOf(e.t, want), jsonOf(e.t, got); w != g {
			e.t.Fatalf("%s differs:\nservice:     %s\nprojections: %s", what, w, g)
		}
	}
	wc, errW := e.svc.Clusters(ctx)
	gc, errG := st.Clusters(ctx)
	check("clusters", wc, gc, errW, errG)
	for _, c := range append(wc, domain.Cluster{Name: "no-such-cluster"}) {
		w, errW := e.svc.Cluster(ctx, c.Name)
		g, errG := st.Cluster(ctx, c.Name)
		check("cluster "+c.Name, w, g, errW, errG)
	}
	wm, errW := e.svc.Machines(ctx)
	gm, errG := st.Machines(ctx)
	check("machines", wm, gm, errW, errG)
	for _, m := range append(wm, domain.Machine{Host: "203.0.113.1"}) {
		w, errW := e.svc.Machine(ctx, m.Host)
		g, errG := st.Machine(ctx, m.Host)
		check("machine "+m.Host, w, g, errW, errG)
	}
	wp, errW := e.svc.Packages(ctx)
	gp, errG := st.Packages(ctx)
	check("packages", wp, gp, errW, errG)
	wo, errW := e.svc.Operations(ctx)
	gops, errG := st.Operations(ctx)
	check("operations", wo, gops, errW, errG)
	for _, o := range append(wo, domain.OperationView{ID: "no-such-operation"}) {
		w, errW := e.svc.Operation(ctx, o.ID)
		g, errG := st.Operation(ctx, o.ID)
		check("operation "+o.ID, w, g, errW, errG)
	}
}

func readFile(name string) (string, error) {
	b, err := os.ReadFile(name)
	return string(b), err
}

// newEnvWithoutClickHouse is NATS JetStream and the event store only.
func newEnvWithoutClickHouse(t testing.TB) *env {
	t.Helper()
	n := testenv.NATS(t)
	_, js := testenv.JetStream(t, n)
	ctx := testenv.Context(t, time.Minute)
	events, err := eventstore.Open(ctx, js, eventstore.Config{Replicas: 1})
	must(t, err, "open event store")
	return &env{t: t, ctx: ctx, natsURL: n.URL(), natsSeed: testenv.SeedFile(t, n, busauth.Server, ""), js: js, events: events}
}

// retryBusy retries a command that decides on the whole inventory while
// other commands keep changing it (the service gives up after 10 tries;
// a client tries again).
func retryBusy(f func() error) error {
	for i := 0; ; i++ {
		err := f()
		if err == nil || i == 20 || !strings.Contains(err.Error(), "while this command was decided") {
			return err
		}
	}
}

// newEnvWithClickHouseUnused is an env for tests of the fold: NATS and the
// service, no ClickHouse.
func newEnvWithClickHouseUnused(t testing.TB) *env {
	t.Helper()
	base := newEnvWithoutClickHouse(t)
	vault, err := secrets.Open(base.ctx, base.js, bytes.Repeat([]byte{3}, secrets.KeySize), 1)
	must(t, err, "open vault")
	pkgs, err := pkgstore.Open(base.ctx, base.js, 1)
	must(t, err, "open package store")
	base.svc = service.New(service.Config{Store: base.events, Vault: vault, Packages: pkgs, PackageLimits: pkgstore.DefaultLimits(), Log: zerolog.Nop()})
	return base
}
