package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testenv"
)

// rawCommit appends evs to one aggregate as a store written before
// reservations would have: no claim, no placement.
func rawCommit(t testing.TB, ctx context.Context, store *eventstore.Store, typ, id string, exp eventstore.Expect, evs ...domain.Event) uint64 {
	t.Helper()
	c := eventstore.Commit{CommitID: uuid.NewString(), AggregateType: typ, AggregateID: id, Time: time.Now(), Actor: "old-dmgr"}
	for _, e := range evs {
		p, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		c.Events = append(c.Events, eventstore.NewEvent{Type: e.EventType(), SchemaVersion: 1, Payload: p})
	}
	seq, err := store.Append(ctx, c, exp)
	if err != nil {
		t.Fatalf("seed %s %s: %v", typ, id, err)
	}
	return seq
}

func oldMachine(host string) domain.MachineRegistered {
	return domain.MachineRegistered{Host: host, Address: host, SSHPort: 22, User: "tidb",
		Credential: domain.CredentialRef{ID: "cred-" + host, Kind: "password"},
		HostKey:    domain.HostKey{Key: testenv.HostKey, Fingerprint: "SHA256:seeded"}}
}

// A store written before reservations has machines without claims and
// clusters without placements. ReserveExisting makes them, once; the
// invariants they keep then hold against that history: a deploy that
// clashes with the old cluster is refused, the machine it uses cannot be
// removed, and a second registration of an old machine's address is
// refused.
func TestReserveExistingReservesWhatAnOldStoreLacks(t *testing.T) {
	f := newService(t) // 198.18.0.11 and .12 registered by this dmgr: they hold their claims
	ctx := testenv.Context(t, time.Minute)
	rawCommit(t, ctx, f.store, domain.AggregateMachine, "198.18.0.21", eventstore.Expect{}, oldMachine("198.18.0.21"))
	plan, err := f.svc.PlanDeployCluster(ctx, service.DeployClusterRequest{Name: "old", Version: "v8.1.0",
		Topology: "master_servers:\n  - host: 198.18.0.21\n"})
	if err == nil || !strings.Contains(err.Error(), "not a registered machine") {
		// The planner sees the raw machine like any other.
		if err != nil {
			t.Fatalf("plan on the old machine: %v", err)
		}
	}
	// The old cluster: its deploy as an old dmgr recorded it.
	rawCommit(t, ctx, f.store, domain.AggregateCluster, "old", eventstore.Expect{}, plan.Cluster,
		domain.OperationRequested{ID: "op-old", Kind: domain.OperationDeploy, Cluster: "old", Plan: plan.Steps},
		domain.OperationSucceeded{ID: "op-old"})

	n, err := f.svc.ReserveExisting(ctx)
	if err != nil {
		t.Fatalf("reserve existing: %v", err)
	}
	if n != 3 { // the old machine's two claims, the old cluster's placement on it
		t.Fatalf("reserve existing made %d commits, want 3", n)
	}
	// A later start finds the mark and makes nothing, even on a fresh server.
	if n, err := anotherServer(t, f).ReserveExisting(ctx); err != nil || n != 0 {
		t.Fatalf("second reserve existing: %d commits, %v; want 0", n, err)
	}

	_, err = f.svc.DeployCluster(ctx, service.Meta{Actor: "admin"}, service.DeployClusterRequest{Name: "new", Version: "v8.1.0",
		Topology: "global:\n  deploy_dir: /dm/new\nmaster_servers:\n  - host: 198.18.0.21\n"})
	if domain.ErrorCode(err) != domain.Conflict || !strings.Contains(err.Error(), "port 8261 on 198.18.0.21 is already used by cluster old") {
		t.Fatalf("deploy clashing with the old cluster: %v", err)
	}
	if _, err := f.svc.RemoveMachine(ctx, service.Meta{Actor: "admin"}, "198.18.0.21"); domain.ErrorCode(err) != domain.Conflict ||
		!strings.Contains(err.Error(), "used by cluster old") {
		t.Fatalf("remove the old cluster's machine: %v", err)
	}
	_, err = f.svc.RegisterMachine(ctx, service.Meta{Actor: "admin"}, service.RegisterMachineRequest{Host: "198.18.0.21", User: "tidb", Password: "pw", HostKey: testenv.HostKey})
	if domain.ErrorCode(err) != domain.Conflict || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("register the old machine again: %v", err)
	}
}

// Done when 2, first half: registrations and deploys of distinct
// clusters touch distinct aggregates, so none of them fails on a
// concurrency conflict, however many run at once.
func TestRegistrationsAndDeploysRunTogetherWithoutConflicts(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := testenv.Context(t, 3*time.Minute)
	const registrars, deployers = 16, 4
	// Each deployer deploys onto a machine of its own, as teams do.
	for c := range deployers {
		if _, err := f.svc.RegisterMachine(ctx, service.Meta{Actor: "admin"}, service.RegisterMachineRequest{
			Host: fmt.Sprintf("198.18.1.%d", c+1), User: "tidb", Password: "pw", HostKey: testenv.HostKey}); err != nil {
			t.Fatal(err)
		}
	}
	duration := 30 * time.Second
	stop := time.Now().Add(duration)
	var registered, deployed atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []error
	failed := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, err)
		}
	}
	for c := range registrars {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				host := fmt.Sprintf("198.19.%d.%d", c, i%250+1)
				if i >= 250 {
					host = fmt.Sprintf("198.20.%d.%d", c*8+i/250, i%250+1)
				}
				_, err := f.svc.RegisterMachine(ctx, service.Meta{Actor: "admin"}, service.RegisterMachineRequest{Host: host, User: "tidb", Password: "pw", HostKey: testenv.HostKey})
				if err != nil {
					failed(fmt.Errorf("register %s: %w", host, err))
					return
				}
				registered.Add(1)
			}
		}()
	}
	for c := range deployers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				name := fmt.Sprintf("d%d-%d", c, i)
				port := 20000 + (c*5000+i)*2
				_, err := f.svc.DeployCluster(ctx, service.Meta{Actor: "admin"}, service.DeployClusterRequest{Name: name, Version: "v8.1.0",
					Topology: fmt.Sprintf("global:\n  deploy_dir: /dm/%s\nmaster_servers:\n  - host: 198.18.1.%d\n    port: %d\n    peer_port: %d\n", name, c+1, port, port+1)})
				if err != nil {
					failed(fmt.Errorf("deploy %s: %w", name, err))
					return
				}
				deployed.Add(1)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(failures...); err != nil {
		t.Fatalf("after %d registrations and %d deploys, commands failed:\n%v", registered.Load(), deployed.Load(), err)
	}
	if registered.Load() == 0 || deployed.Load() == 0 {
		t.Fatalf("%d registrations, %d deploys: the load did not run", registered.Load(), deployed.Load())
	}
	t.Logf("%d registrations and %d deploys in %s, no conflict", registered.Load(), deployed.Load(), duration)
}

// Done when 2, second half: on a store of 10,000 machines, 50 deploys
// whose topologies clash on one port of one machine race; exactly one is
// accepted, and every other is refused for the clash.
func TestFiftyClashingDeploysOnALargeStoreAcceptOne(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := testenv.Context(t, 3*time.Minute)
	seedMachines(t, ctx, f.store, 10000)
	const n = 50
	errs := concurrently(n, func(i int) error {
		// Each also places a master on a machine of its own: only
		// the shared one's port clashes.
		_, err := f.svc.DeployCluster(ctx, service.Meta{Actor: "admin"}, service.DeployClusterRequest{
			Name: fmt.Sprintf("clash-%d", i), Version: "v8.1.0",
			Topology: fmt.Sprintf("global:\n  deploy_dir: /dm/clash-%d\nmaster_servers:\n  - host: %s\n  - host: 198.18.0.11\n    port: 9000\n    peer_port: %d\n",
				i, seededHost(i), 9100+i)})
		return err
	})
	exactlyOneAccepted(t, "deploys of one port on one machine", errs, "port 9000 on 198.18.0.11 is already used by cluster clash-")
}

func seededHost(i int) string { return fmt.Sprintf("10.%d.%d.%d", 100+i/62500, i/250%250, i%250+1) }

// seedMachines registers n machines (seededHost(0..n-1)) with their
// claims, as raw commits: fast, and what registrations would have made.
func seedMachines(t testing.TB, ctx context.Context, store *eventstore.Store, n int) {
	t.Helper()
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
				h := seededHost(i)
				rawCommit(t, ctx, store, domain.AggregateMachine, h, eventstore.Expect{}, oldMachine(h))
				for _, c := range domain.MachineClaims(h, h, 22) {
					rawCommit(t, ctx, store, domain.AggregateClaim, c, eventstore.Expect{}, domain.ClaimTaken{Claim: c, Owner: h})
				}
			}
		}()
	}
	wg.Wait()
}
