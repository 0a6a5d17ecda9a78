package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/httpapi"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testenv"
)

// BenchmarkCommandsAtScale (issue [7], Done when 1): deploy POST→202 and
// dry-run latency, and CPU per deploy, on an empty store and on one with
// 30,000 machines, 1,000 clusters and 20,000 operations — alone, and
// while 16 clients register machines and step results are appended at
// 500/s. Each iteration deploys a new one-master cluster onto a machine
// that a seeded cluster uses (so the decision reads a machine, its
// cluster and the package), and asks for a dry run of another. The 16
// registering clients send as fast as they are answered; the step results
// come from 10 writers at 50/s each. registrations/s and step-results/s
// report the load reached.
//
//	go test -run '^$' -bench BenchmarkCommandsAtScale -benchtime 200x ./httpapi/
//
// Sizes come from DMGR_BENCH_MACHINES, _CLUSTERS, _OPS (defaults above).
func BenchmarkCommandsAtScale(b *testing.B) {
	machines := envInt("DMGR_BENCH_MACHINES", 30000)
	clusters := envInt("DMGR_BENCH_CLUSTERS", 1000)
	ops := envInt("DMGR_BENCH_OPS", 20000)
	var emptyCPU float64
	for _, tc := range []struct {
		name string
		seed bool
		load bool
	}{{"empty", false, false}, {"scale", true, false}, {"scale+load", true, true}} {
		b.Run(tc.name, func(b *testing.B) {
			bed := newScaleBed(b)
			ctx := testenv.Context(b, time.Hour)
			if tc.seed {
				bed.seed(b, ctx, machines, clusters, ops)
			} else {
				bed.seed(b, ctx, clusters, 0, 0) // machines to deploy on, nothing else
			}
			stopLoad := func() {}
			loadStart := time.Now()
			if tc.load {
				stopLoad = bed.load(b, ctx)
				loadStart = time.Now()
				bed.registered.Store(0)
				bed.results.Store(0)
			}
			var deployT, dryT []time.Duration
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := range b.N {
				host := seededHost(i % max(clusters, 1))
				port := 30000 + 2*(i%15000)
				topo := fmt.Sprintf("global:\n  deploy_dir: /dm/bench-%d\nmaster_servers:\n  - host: %s\n    port: %d\n    peer_port: %d\n", i, host, port, port+1)
				t0 := time.Now()
				bed.post(b, "/api/v1/clusters", map[string]string{"name": fmt.Sprintf("bench-%d", i), "version": "v8.1.0", "topology": topo}, http.StatusAccepted)
				deployT = append(deployT, time.Since(t0))
				t1 := time.Now()
				bed.post(b, "/api/v1/clusters?dry_run=true", map[string]string{"name": fmt.Sprintf("dry-%d", i), "version": "v8.1.0",
					"topology": fmt.Sprintf("master_servers:\n  - host: %s\n    port: %d\n    peer_port: %d\n", seededHost((i+7)%max(clusters, 1)), 20000+2*(i%4000), 20001+2*(i%4000))}, http.StatusOK)
				dryT = append(dryT, time.Since(t1))
			}
			b.StopTimer()
			cpu := float64((cpuTime() - cpu0).Microseconds()) / float64(b.N)
			stopLoad()
			b.ReportMetric(pct(deployT, 50), "deploy-p50-ms")
			b.ReportMetric(pct(deployT, 99), "deploy-p99-ms")
			b.ReportMetric(pct(dryT, 50), "dryrun-p50-ms")
			b.ReportMetric(pct(dryT, 99), "dryrun-p99-ms")
			// The CPU of the whole process per iteration; under load it
			// counts the load too, so only the runs without it compare.
			b.ReportMetric(cpu, "cpu-µs/iter")
			if tc.name == "empty" {
				emptyCPU = cpu
			} else if emptyCPU > 0 && !tc.load {
				b.ReportMetric(cpu/emptyCPU, "cpu-x-empty")
			}
			if tc.load {
				secs := time.Since(loadStart).Seconds()
				b.ReportMetric(float64(bed.registered.Load())/secs, "registrations/s")
				b.ReportMetric(float64(bed.results.Load())/secs, "step-results/s")
				if n := bed.loadErrors.Load(); n > 0 {
					b.Fatalf("%d commands of the background load failed (first: %v)", n, bed.firstLoadErr.Load())
				}
			}
		})
	}
}

type scaleBed struct {
	url    string
	client *http.Client
	store  *eventstore.Store
	svc    *service.Service
	// heads of the seeded clusters (seq, version), for the step results.
	mu    sync.Mutex
	heads map[string][2]uint64

	registered, results, loadErrors atomic.Int64
	firstLoadErr                    atomic.Value
}

const benchToken = "bench-token-0123456789abcdef"

func newScaleBed(b *testing.B) *scaleBed {
	n := testenv.NATS(b)
	_, js := testenv.JetStream(b, n)
	ctx := testenv.Context(b, time.Minute)
	store, err := eventstore.Open(ctx, js, eventstore.Config{Replicas: 1})
	if err != nil {
		b.Fatal(err)
	}
	vault, err := secrets.Open(ctx, js, bytes.Repeat([]byte{7}, secrets.KeySize), 1)
	if err != nil {
		b.Fatal(err)
	}
	pkgs, err := pkgstore.Open(ctx, js, 1)
	if err != nil {
		b.Fatal(err)
	}
	svc := service.New(service.Config{Store: store, Vault: vault, Packages: pkgs, PackageLimits: pkgstore.DefaultLimits(), Log: zerolog.Nop()})
	b.Cleanup(svc.Close)
	if _, err := svc.UploadPackage(ctx, service.Meta{Actor: "admin"}, service.UploadPackageRequest{Name: "dm", Version: "v8.1.0",
		Body: bytes.NewReader(testenv.DMPackage(b, "v8.1.0"))}); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.Handler(httpapi.Config{Service: svc, AdminToken: benchToken, Log: zerolog.Nop()}))
	b.Cleanup(srv.Close)
	return &scaleBed{url: srv.URL, client: srv.Client(), store: store, svc: svc, heads: map[string][2]uint64{}}
}

func (s *scaleBed) post(b *testing.B, path string, body any, want int) {
	if err := s.do(path, body, want); err != nil {
		b.Fatal(err)
	}
}

func (s *scaleBed) do(path string, body any, want int) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPost, s.url+path, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+benchToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		var p map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&p)
		return fmt.Errorf("POST %s: %d %v, want %d", path, resp.StatusCode, p, want)
	}
	return nil
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

func seededHost(i int) string { return fmt.Sprintf("10.%d.%d.%d", 100+i/62500, i/250%250, i%250+1) }

// seed writes, as raw commits (what the commands would have written):
// machines with their claims; clusters of one master each on machine i,
// with their placement, deployed and then run through ops operations in
// all.
func (s *scaleBed) seed(b *testing.B, ctx context.Context, machines, clusters, ops int) {
	start := time.Now()
	parallel(machines, func(i int) {
		h := seededHost(i)
		s.raw(b, ctx, domain.AggregateMachine, h, eventstore.Expect{}, domain.MachineRegistered{Host: h, Address: h, SSHPort: 22, User: "tidb",
			Credential: domain.CredentialRef{ID: "cred-" + h, Kind: "password"}, HostKey: domain.HostKey{Key: testenv.HostKey, Fingerprint: "SHA256:seeded"}})
		for _, c := range domain.MachineClaims(h, h, 22) {
			s.raw(b, ctx, domain.AggregateClaim, c, eventstore.Expect{}, domain.ClaimTaken{Claim: c, Owner: h})
		}
	})
	perCluster := 0
	if clusters > 0 {
		perCluster = ops / clusters
	}
	parallel(clusters, func(i int) {
		name := fmt.Sprintf("seed-%d", i)
		h := seededHost(i)
		plan, err := s.svc.PlanDeployCluster(ctx, service.DeployClusterRequest{Name: name, Version: "v8.1.0",
			Topology: fmt.Sprintf("global:\n  deploy_dir: /dm/%s\nmaster_servers:\n  - host: %s\n", name, h)})
		if err != nil {
			b.Error(err)
			return
		}
		op := uuid.NewString()
		seq := s.raw(b, ctx, domain.AggregateCluster, name, eventstore.Expect{}, plan.Cluster,
			domain.OperationRequested{ID: op, Kind: domain.OperationDeploy, Cluster: name, Plan: plan.Steps}, domain.OperationSucceeded{ID: op})
		head := [2]uint64{seq, 3}
		st, err := s.store.Load(ctx, domain.AggregateMachine, h)
		if err != nil {
			b.Error(err)
			return
		}
		s.raw(b, ctx, domain.AggregateMachine, h, eventstore.Expect{LastSeq: st.LastSeq, Version: st.Version()},
			domain.InstancesPlaced{Cluster: name, Operation: op, Instances: []string{plan.Cluster.Instances[0].ID}})
		for range perCluster - 1 {
			op := uuid.NewString()
			seq = s.raw(b, ctx, domain.AggregateCluster, name, eventstore.Expect{LastSeq: head[0], Version: head[1]},
				domain.OperationRequested{ID: op, Kind: domain.OperationRestart, Cluster: name, Plan: plan.Steps[len(plan.Steps)-2:]},
				domain.OperationSucceeded{ID: op})
			head = [2]uint64{seq, head[1] + 2}
		}
		s.mu.Lock()
		s.heads[name] = head
		s.mu.Unlock()
	})
	last, _ := s.store.LastSeq(ctx)
	b.Logf("seeded %d machines, %d clusters, %d operations: %d commits in %s", machines, clusters, clusters*max(perCluster, 1), last, time.Since(start).Round(time.Millisecond))
}

func (s *scaleBed) raw(b *testing.B, ctx context.Context, typ, id string, exp eventstore.Expect, evs ...domain.Event) uint64 {
	seq, err := appendRaw(ctx, s.store, typ, id, exp, evs...)
	if err != nil {
		b.Fatalf("seed %s %s: %v", typ, id, err)
	}
	return seq
}

func appendRaw(ctx context.Context, store *eventstore.Store, typ, id string, exp eventstore.Expect, evs ...domain.Event) (uint64, error) {
	c := eventstore.Commit{CommitID: uuid.NewString(), AggregateType: typ, AggregateID: id, Time: time.Now(), Actor: "seed"}
	for _, e := range evs {
		p, err := json.Marshal(e)
		if err != nil {
			return 0, err
		}
		c.Events = append(c.Events, eventstore.NewEvent{Type: e.EventType(), SchemaVersion: 1, Payload: p})
	}
	return store.Append(ctx, c, exp)
}

// load starts 16 clients registering machines through the API and a
// writer of step results at 500/s on the seeded clusters; the returned
// func stops them.
func (s *scaleBed) load(b *testing.B, ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	fail := func(err error) {
		if s.loadErrors.Add(1) == 1 {
			s.firstLoadErr.Store(err)
		}
	}
	for c := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				host := fmt.Sprintf("10.%d.%d.%d", 200+c, i/250%250, i%250+1)
				if err := s.do("/api/v1/machines", map[string]any{"host": host, "user": "tidb", "password": "pw", "host_key": testenv.HostKey}, http.StatusAccepted); err != nil {
					if ctx.Err() == nil {
						fail(err)
					}
					return
				}
				s.registered.Add(1)
			}
		}()
	}
	names := make([]string, 0, len(s.heads))
	for name := range s.heads {
		names = append(names, name)
	}
	slices.Sort(names)
	// Step results at 500/s: 10 writers, each on its own clusters (so no
	// two append to one cluster), 50/s each.
	const writers = 10
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(writers * time.Second / 500)
			defer tick.Stop()
			for i := w; ; i += writers {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				name := names[i%len(names)]
				s.mu.Lock()
				head := s.heads[name]
				s.mu.Unlock()
				seq, err := appendRaw(ctx, s.store, domain.AggregateCluster, name, eventstore.Expect{LastSeq: head[0], Version: head[1]},
					domain.StepSucceeded{Operation: "load", Step: "check-cluster", Attempt: 1, Host: "h", Agent: "bench"})
				if err != nil {
					if ctx.Err() == nil {
						fail(err)
					}
					return
				}
				s.mu.Lock()
				s.heads[name] = [2]uint64{seq, head[1] + 1}
				s.mu.Unlock()
				s.results.Add(1)
			}
		}()
	}
	time.Sleep(time.Second) // let the load run before the measurement
	return func() { cancel(); wg.Wait() }
}

func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

func pct(d []time.Duration, p int) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := min(len(s)-1, len(s)*p/100)
	return float64(s[i].Microseconds()) / 1000
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
