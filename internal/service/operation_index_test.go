package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testenv"
)

// anotherServer is a second dmgr server on the same store, with an
// operation index of its own (HA: several servers share the stream).
func anotherServer(t testing.TB, f fixture) *service.Service {
	t.Helper()
	ctx := testenv.Context(t, time.Minute)
	pkgs, err := pkgstore.Open(ctx, f.js, 1)
	if err != nil {
		t.Fatal(err)
	}
	svc := service.New(service.Config{Store: f.store, Vault: f.vault, Packages: pkgs, PackageLimits: pkgstore.DefaultLimits(), Log: zerolog.Nop()})
	t.Cleanup(svc.Close)
	return svc
}

func deployOn(t testing.TB, ctx context.Context, svc *service.Service, name string, port int) service.Accepted {
	t.Helper()
	acc, err := svc.DeployCluster(ctx, service.Meta{Actor: "admin"}, service.DeployClusterRequest{Name: name, Version: "v8.1.0",
		Topology: fmt.Sprintf("global:\n  deploy_dir: /dm/%s\nmaster_servers:\n  - host: 198.18.0.11\n    port: %d\n    peer_port: %d\n", name, port, port+1000)})
	if err != nil {
		t.Fatalf("deploy %s: %v", name, err)
	}
	return acc
}

// An operation is found, with its cluster and steps, by the server that
// committed it and by another server, right after the 202 and whichever
// cluster it runs on; a command that completed in its commit is found on
// its machine. Cancel finds its cluster through the index too.
func TestOperationIndexFindsOperationsAcrossClustersAndServers(t *testing.T) {
	f := newService(t)
	t.Cleanup(f.svc.Close)
	other := anotherServer(t, f)
	ctx := testenv.Context(t, 2*time.Minute)
	// The other server's index is running and caught up before the
	// deploys: what it must find, it learns while they happen.
	if _, err := other.Operation(ctx, uuid.NewString()); domain.ErrorCode(err) != domain.NotFound {
		t.Fatalf("warm-up lookup: %v, want not found", err)
	}
	ops := map[string]string{} // operation → cluster
	for i := range 8 {
		name := fmt.Sprintf("c%d", i)
		acc := deployOn(t, ctx, f.svc, name, 20000+10*i)
		ops[acc.OperationID] = name
		for who, svc := range map[string]*service.Service{"committing server": f.svc, "other server": other} {
			op, err := svc.Operation(ctx, acc.OperationID)
			if err != nil {
				t.Fatalf("%s: operation %s of %s right after its 202: %v", who, acc.OperationID, name, err)
			}
			if op.Cluster != name || op.Kind != domain.OperationDeploy || op.CommitSeq != acc.CommitSeq || len(op.Steps) == 0 {
				t.Fatalf("%s: operation %s is %+v, want the deploy of %s at seq %d with its steps", who, acc.OperationID, op, name, acc.CommitSeq)
			}
		}
	}
	for id, name := range ops {
		op, err := other.Operation(ctx, id)
		if err != nil || op.Cluster != name {
			t.Fatalf("operation %s: %+v %v, want cluster %s", id, op, err, name)
		}
	}
	// Cancel one, through the other server: only that cluster's deploy
	// is cancelled.
	var victim string
	for id, name := range ops {
		if name == "c5" {
			victim = id
		}
	}
	if _, err := other.CancelOperation(ctx, service.Meta{Actor: "admin"}, victim); err != nil {
		t.Fatalf("cancel the deploy of c5: %v", err)
	}
	for id, name := range ops {
		op, err := f.svc.Operation(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want := domain.OperationStatusPending
		if id == victim {
			want = domain.OperationStatusCancelled
		}
		if op.Status != want {
			t.Errorf("the deploy of %s is %s, want %s", name, op.Status, want)
		}
	}
	// A registration is an operation of its own, on its machine.
	reg, err := f.svc.RegisterMachine(ctx, service.Meta{Actor: "admin"}, service.RegisterMachineRequest{Host: "198.18.0.13", User: "tidb",
		Password: "pw", HostKey: testenv.HostKey})
	if err != nil {
		t.Fatal(err)
	}
	op, err := other.Operation(ctx, reg.OperationID)
	if err != nil || op.Cluster != "" || op.Kind != "register-machine" || op.AggregateType != domain.AggregateMachine ||
		op.Status != domain.OperationStatusSucceeded {
		t.Fatalf("the registration %s: %+v %v, want a succeeded register-machine on a machine", reg.OperationID, op, err)
	}
	if _, err := other.CancelOperation(ctx, service.Meta{Actor: "admin"}, reg.OperationID); domain.ErrorCode(err) != domain.Conflict {
		t.Fatalf("cancel a registration: %v, want a conflict", err)
	}
}

// An id that no commit carries is not found, by every command that takes
// an operation id.
func TestUnknownOperationIsNotFound(t *testing.T) {
	f := newService(t)
	t.Cleanup(f.svc.Close)
	ctx := testenv.Context(t, time.Minute)
	deployOn(t, ctx, f.svc, "prod-a", 8261)
	id := uuid.NewString()
	m := service.Meta{Actor: "admin"}
	calls := map[string]func() error{
		"get":      func() error { _, err := f.svc.Operation(ctx, id); return err },
		"cancel":   func() error { _, err := f.svc.CancelOperation(ctx, m, id); return err },
		"retry":    func() error { _, err := f.svc.RetryOperation(ctx, m, id); return err },
		"rollback": func() error { _, err := f.svc.RollbackOperation(ctx, m, id); return err },
		"rollback dry run": func() error {
			_, err := f.svc.PlanRollbackOperation(ctx, id)
			return err
		},
	}
	for name, call := range calls {
		if err := call(); domain.ErrorCode(err) != domain.NotFound {
			t.Errorf("%s of an unknown operation: %v, want not found", name, err)
		}
	}
}

// Operations committed before a server (and its index) started — by an
// older dmgr, or straight into the store — are found by that server, and
// can be cancelled, retried and rolled back through it.
func TestOperationCommittedBeforeTheIndexIsFound(t *testing.T) {
	f := newService(t)
	ctx := testenv.Context(t, 2*time.Minute)
	deploy := deployOn(t, ctx, f.svc, "old", 8261)
	seed := newSeeder(f.store)
	up := seed.failedUpgrade(t, ctx, "old", deploy.OperationID)
	fresh := anotherServer(t, f) // started after every commit above
	op, err := fresh.Operation(ctx, up)
	if err != nil || op.Cluster != "old" || op.Kind != domain.OperationUpgrade || op.Status != domain.OperationStatusFailed {
		t.Fatalf("the old upgrade %s: %+v %v, want a failed upgrade of cluster old", up, op, err)
	}
	if _, err := fresh.RetryOperation(ctx, service.Meta{Actor: "admin"}, up); err != nil {
		t.Fatalf("retry the old upgrade: %v", err)
	}
	if _, err := fresh.CancelOperation(ctx, service.Meta{Actor: "admin"}, up); err != nil {
		t.Fatalf("cancel the old upgrade: %v", err)
	}
	if _, err := fresh.RollbackOperation(ctx, service.Meta{Actor: "admin"}, up); err != nil {
		t.Fatalf("roll the old upgrade back: %v", err)
	}
	if op, err := fresh.Operation(ctx, up); err != nil || op.Status != domain.OperationStatusRolledBack {
		t.Fatalf("the old upgrade after its rollback: %+v %v, want rolled back", op, err)
	}
}

// seeder appends commits straight to the store, as an older dmgr (or the
// coordinator) would have, without the service: quick, and known to the
// index only through the stream.
type seeder struct {
	store *eventstore.Store
	heads map[string][2]uint64 // cluster → last seq, version
}

func newSeeder(store *eventstore.Store) *seeder {
	return &seeder{store: store, heads: map[string][2]uint64{}}
}

func (s *seeder) commit(t testing.TB, ctx context.Context, cluster, op string, evs ...domain.Event) {
	t.Helper()
	head, ok := s.heads[cluster]
	if !ok {
		st, err := s.store.Load(ctx, domain.AggregateCluster, cluster)
		if err != nil {
			t.Fatal(err)
		}
		head = [2]uint64{st.LastSeq, st.Version()}
	}
	c := eventstore.Commit{CommitID: uuid.NewString(), AggregateType: domain.AggregateCluster, AggregateID: cluster,
		Time: time.Now(), Actor: "seed", OperationID: op}
	for _, e := range evs {
		p, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		c.Events = append(c.Events, eventstore.NewEvent{Type: e.EventType(), SchemaVersion: 1, Payload: p})
	}
	seq, err := s.store.Append(ctx, c, eventstore.Expect{LastSeq: head[0], Version: head[1]})
	if err != nil {
		t.Fatalf("seed %s on %s: %v", op, cluster, err)
	}
	s.heads[cluster] = [2]uint64{seq, head[1] + uint64(len(evs))}
}

// failedUpgrade ends cluster's deploy and records an upgrade to v8.2.0
// that stopped the cluster's first master, then failed; it returns the
// upgrade's id.
func (s *seeder) failedUpgrade(t testing.TB, ctx context.Context, cluster, deploy string) string {
	t.Helper()
	s.commit(t, ctx, cluster, deploy, domain.OperationSucceeded{ID: deploy})
	return s.upgradeAfter(t, ctx, cluster)
}

// upgradeAfter records a failed upgrade on an idle cluster.
func (s *seeder) upgradeAfter(t testing.TB, ctx context.Context, cluster string) string {
	t.Helper()
	up := uuid.NewString()
	stop := domain.Step{ID: "stop/198.18.0.11", Kind: domain.StepStop, Host: "198.18.0.11", Instance: s.master(t, ctx, cluster), Role: domain.RoleMaster}
	s.commit(t, ctx, cluster, up, domain.OperationRequested{ID: up, Kind: domain.OperationUpgrade, Cluster: cluster,
		Plan: []domain.Step{stop}, Version: "v8.2.0", FromVersion: "v8.1.0"})
	s.commit(t, ctx, cluster, up, domain.StepSucceeded{Operation: up, Step: stop.ID, Attempt: 1, Host: stop.Host},
		domain.OperationFailed{ID: up, Error: "seeded"})
	return up
}

func (s *seeder) master(t testing.TB, ctx context.Context, cluster string) string {
	t.Helper()
	st, err := s.store.Load(ctx, domain.AggregateCluster, cluster)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range st.Events {
		if e.Type != domain.TypeClusterDeployRequested {
			continue
		}
		var d domain.ClusterDeployRequested
		if err := json.Unmarshal(e.Payload, &d); err != nil {
			t.Fatal(err)
		}
		return d.Instances[0].ID
	}
	t.Fatalf("cluster %s has no deploy", cluster)
	return ""
}

// fill appends n succeeded deploy operations spread over n/20 clusters
// (as many clusters, each with 20 operations, as the scale).
func (s *seeder) fill(t testing.TB, ctx context.Context, n int) {
	t.Helper()
	for i := range n {
		cluster := fmt.Sprintf("fill-%d", i/20)
		op := uuid.NewString()
		s.commit(t, ctx, cluster, op, domain.OperationRequested{ID: op, Kind: domain.OperationDeploy, Cluster: cluster},
			domain.OperationSucceeded{ID: op})
	}
}

func (s *seeder) forget(cluster string) { delete(s.heads, cluster) }

// BenchmarkOperationCommandsAtScale: cancel, retry, rollback and GET of
// one operation on a store of 10 and of 20,000 operations (1,000
// clusters of 20), seeded straight into the event store. The commands
// find their operation through the index and read only its cluster, so
// their cost must not change with the number of operations. The index's
// first read of the stream (start-up, in the background) is reported
// apart, as index-warmup-ms.
//
// Each iteration cancels and retries one deploy (pending → cancelled →
// pending), rolls back a freshly seeded failed upgrade (the seeding is
// not timed) and GETs the upgrade; the two target clusters' histories
// grow alike at either size.
func BenchmarkOperationCommandsAtScale(b *testing.B) {
	for _, n := range []int{10, 20000} {
		b.Run(fmt.Sprintf("ops=%d", n), func(b *testing.B) {
			f := newService(b)
			b.Cleanup(f.svc.Close)
			ctx := testenv.Context(b, 30*time.Minute)
			cr := deployOn(b, ctx, f.svc, "target-cr", 20000)
			rb := deployOn(b, ctx, f.svc, "target-rb", 20100)
			seed := newSeeder(f.store)
			seed.commit(b, ctx, "target-rb", rb.OperationID, domain.OperationSucceeded{ID: rb.OperationID})
			seed.fill(b, ctx, n)
			svc := anotherServer(b, f) // a server started on this store
			start := time.Now()
			if err := svc.StartOperationIndex(); err != nil {
				b.Fatal(err)
			}
			if _, err := svc.Operation(ctx, cr.OperationID); err != nil {
				b.Fatal(err)
			}
			warmup := time.Since(start)
			m := service.Meta{Actor: "admin"}
			var cancelT, retryT, rollbackT, getT time.Duration
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				seed.forget("target-rb")
				up := seed.upgradeAfter(b, ctx, "target-rb")
				b.StartTimer()

				t0 := time.Now()
				if _, err := svc.CancelOperation(ctx, m, cr.OperationID); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if _, err := svc.RetryOperation(ctx, m, cr.OperationID); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				acc, err := svc.RollbackOperation(ctx, m, up)
				if err != nil {
					b.Fatal(err)
				}
				t3 := time.Now()
				if op, err := svc.Operation(ctx, up); err != nil || op.Status != domain.OperationStatusRolledBack {
					b.Fatalf("get %s: %+v %v", up, op, err)
				}
				t4 := time.Now()
				cancelT, retryT, rollbackT, getT = cancelT+t1.Sub(t0), retryT+t2.Sub(t1), rollbackT+t3.Sub(t2), getT+t4.Sub(t3)

				b.StopTimer()
				seed.forget("target-rb")
				seed.commit(b, ctx, "target-rb", acc.OperationID, domain.OperationFailed{ID: acc.OperationID, Error: "seeded"})
				b.StartTimer()
			}
			b.StopTimer()
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
			b.ReportMetric(per(cancelT), "cancel-µs")
			b.ReportMetric(per(retryT), "retry-µs")
			b.ReportMetric(per(rollbackT), "rollback-µs")
			b.ReportMetric(per(getT), "get-µs")
			b.ReportMetric(float64(warmup.Milliseconds()), "index-warmup-ms")
		})
	}
}
