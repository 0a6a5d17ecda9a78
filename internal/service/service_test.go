package service_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testenv"
)

type fixture struct {
	svc   *service.Service
	store *eventstore.Store
	vault *secrets.Vault
	js    jetstream.JetStream
}

func newService(t testing.TB) fixture {
	t.Helper()
	n := testenv.NATS(t)
	_, js := testenv.JetStream(t, n)
	ctx := testenv.Context(t, time.Minute)
	store, err := eventstore.Open(ctx, js, eventstore.Config{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	vault, err := secrets.Open(ctx, js, bytes.Repeat([]byte{1}, secrets.KeySize), 1)
	if err != nil {
		t.Fatal(err)
	}
	pkgs, err := pkgstore.Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	svc := service.New(service.Config{Store: store, Vault: vault, Packages: pkgs, PackageLimits: pkgstore.DefaultLimits(), Log: zerolog.Nop()})
	f := fixture{svc: svc, store: store, vault: vault, js: js}
	for _, h := range []string{"198.18.0.11", "198.18.0.12"} {
		if _, err := svc.RegisterMachine(ctx, service.Meta{Actor: "admin"}, service.RegisterMachineRequest{Host: h, User: "tidb", Password: "pw", HostKey: testenv.HostKey}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.UploadPackage(ctx, service.Meta{Actor: "admin"}, service.UploadPackageRequest{Name: "dm", Version: "v8.1.0",
		Body: bytes.NewReader(testenv.DMPackage(t, "v8.1.0"))}); err != nil {
		t.Fatal(err)
	}
	return f
}

// Deploys of different clusters that want the same ports race: the
// placement invariant spans aggregates, so exactly one may win.
func TestConcurrentDeploysWithClashingPortsAcceptOne(t *testing.T) {
	f := newService(t)
	ctx := testenv.Context(t, time.Minute)
	const n = 12
	errs := concurrently(n, func(i int) error {
		_, err := f.svc.DeployCluster(ctx, service.Meta{Actor: "admin"}, service.DeployClusterRequest{
			Name: fmt.Sprintf("c%d", i), Version: "v8.1.0",
			Topology: fmt.Sprintf("global:\n  deploy_dir: /dm/c%d\nmaster_servers:\n  - host: 198.18.0.11\n", i)})
		return err
	})
	exactlyOneAccepted(t, "deploys of one port", errs, "port 8261 on 198.18.0.11 is already used by cluster")
	cs, err := f.svc.Clusters(ctx)
	if err != nil || len(cs) != 1 {
		t.Fatalf("clusters: %v %v", cs, err)
	}
}

// Deploys that do not clash all succeed, even though each one's decision
// is invalidated by the others' commits and has to be decided again.
func TestConcurrentDeploysWithoutClashAllSucceed(t *testing.T) {
	f := newService(t)
	ctx := testenv.Context(t, time.Minute)
	const n = 6
	errs := concurrently(n, func(i int) error {
		_, err := f.svc.DeployCluster(ctx, service.Meta{Actor: "admin"}, service.DeployClusterRequest{
			Name: fmt.Sprintf("c%d", i), Version: "v8.1.0",
			Topology: fmt.Sprintf("global:\n  deploy_dir: /dm/c%d\nmaster_servers:\n  - host: 198.18.0.12\n    port: %d\n    peer_port: %d\n", i, 10000+i, 11000+i)})
		return err
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// Removing a machine while a deploy onto it is decided must not leave a
// cluster on a removed machine (write skew across aggregates).
func TestRemoveMachineRacingADeployNeverLeavesAClusterOnARemovedMachine(t *testing.T) {
	for round := range 5 {
		f := newService(t)
		ctx := testenv.Context(t, time.Minute)
		var deployErr, removeErr error
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, deployErr = f.svc.DeployCluster(ctx, service.Meta{}, service.DeployClusterRequest{Name: "c", Version: "v8.1.0",
				Topology: "master_servers:\n  - host: 198.18.0.12\n"})
		}()
		go func() {
			defer wg.Done()
			_, removeErr = f.svc.RemoveMachine(ctx, service.Meta{}, "198.18.0.12")
		}()
		wg.Wait()
		if (deployErr == nil) == (removeErr == nil) {
			t.Fatalf("round %d: deploy %v, remove %v: exactly one must win", round, deployErr, removeErr)
		}
	}
}

// A refused registration leaves no secret in the vault: the vault's bucket
// is listed as it is stored, and holds exactly the credentials of the
// registered machines, both after a registration refused before the vault
// is written (the host is known) and after registrations refused only when
// their commit lost a race (the vault was written, and must be cleaned).
func TestRefusedRegistrationStoresNoSecret(t *testing.T) {
	f := newService(t)
	ctx := testenv.Context(t, time.Minute)
	_, err := f.svc.RegisterMachine(ctx, service.Meta{}, service.RegisterMachineRequest{Host: "198.18.0.11", User: "tidb", Password: "pw2", HostKey: testenv.HostKey})
	if domain.ErrorCode(err) != domain.Conflict {
		t.Fatalf("second registration: %v", err)
	}
	m, err := f.svc.Machine(ctx, "198.18.0.11")
	if err != nil {
		t.Fatal(err)
	}
	if _, secret, err := f.vault.Get(ctx, m.Credential.ID, m.Host); err != nil || string(secret) != "pw" {
		t.Fatalf("the registered credential changed: %q %v", secret, err)
	}
	requireVaultHoldsOnly(t, f, "198.18.0.11", "198.18.0.12")

	// Concurrent registrations of one new host: all pass the early check,
	// all write the vault, one commit wins and the others are refused.
	const n = 8
	errs := concurrently(n, func(i int) error {
		_, err := f.svc.RegisterMachine(ctx, service.Meta{}, service.RegisterMachineRequest{Host: "198.18.0.13", User: "tidb",
			Password: fmt.Sprintf("pw-%d", i), HostKey: testenv.HostKey})
		return err
	})
	exactlyOneAccepted(t, "registrations of one host", errs, "")
	requireVaultHoldsOnly(t, f, "198.18.0.11", "198.18.0.12", "198.18.0.13")
}

// requireVaultHoldsOnly lists the keys of the vault's bucket and fails
// unless they are exactly the credential ids of the given machines.
func requireVaultHoldsOnly(t *testing.T, f fixture, hosts ...string) {
	t.Helper()
	ctx := testenv.Context(t, 30*time.Second)
	want := map[string]bool{}
	for _, h := range hosts {
		m, err := f.svc.Machine(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		want[m.Credential.ID] = true
	}
	kv, err := f.js.KeyValue(ctx, secrets.Bucket)
	if err != nil {
		t.Fatalf("open vault bucket: %v", err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatalf("list vault keys: %v", err)
	}
	var got []string
	for k := range lister.Keys() {
		got = append(got, k)
	}
	if len(got) != len(want) {
		t.Fatalf("vault holds %d secrets %v, want the %d of the registered machines", len(got), got, len(want))
	}
	for _, k := range got {
		if !want[k] {
			t.Fatalf("vault holds %s, a secret of no registered machine (all: %v)", k, got)
		}
	}
}

// exactlyOneAccepted fails t unless exactly one of the concurrent commands
// whose errors are errs was accepted and each other one was refused with a
// conflict whose message contains refusal.
func exactlyOneAccepted(t *testing.T, what string, errs []error, refusal string) {
	t.Helper()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case domain.ErrorCode(err) == domain.Conflict && strings.Contains(err.Error(), refusal):
		default:
			t.Errorf("%s, command %d: %v; want accepted or a conflict saying %q", what, i, err, refusal)
		}
	}
	if won != 1 {
		t.Fatalf("%s: %d accepted, want exactly 1", what, won)
	}
}

// concurrently runs f(0) … f(n-1) at once and returns their errors, each
// at its index.
func concurrently(n int, f func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	return errs
}
