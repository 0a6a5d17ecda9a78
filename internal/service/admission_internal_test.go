package service

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/testenv"
)

// Registrations and removals of machines take turns (at most
// MaxConcurrentRegistrations at once); one whose request ends while it
// waits is refused as unavailable and writes nothing: no event, no
// secret. Once the turn is free it goes through.
func TestARegistrationWaitingForItsTurnGivesUpWithItsRequest(t *testing.T) {
	ctx := testenv.Context(t, time.Minute)
	_, js := testenv.JetStream(t, testenv.NATS(t))
	store, err := eventstore.Open(ctx, js, eventstore.Config{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	vault, err := secrets.Open(ctx, js, bytes.Repeat([]byte{3}, secrets.KeySize), 1)
	if err != nil {
		t.Fatal(err)
	}
	pkgs, err := pkgstore.Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	svc := New(Config{Store: store, Vault: vault, Packages: pkgs, Log: zerolog.Nop(), MaxConcurrentRegistrations: 1})
	t.Cleanup(svc.Close)
	if cap(svc.inventory) != 1 {
		t.Fatalf("%d registrations admitted at once, want 1", cap(svc.inventory))
	}
	req := RegisterMachineRequest{Host: "198.18.0.21", User: "tidb", Password: "pw", HostKey: testenv.HostKey}

	svc.inventory <- struct{}{} // another registration holds the turn
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = svc.RegisterMachine(wctx, Meta{Actor: "admin"}, req)
	cancel()
	if domain.ErrorCode(err) != domain.Unavailable || !strings.Contains(err.Error(), "registration of 198.18.0.21: gave up waiting for its turn") {
		t.Fatalf("registration waiting past its deadline: %v; want unavailable, naming the wait", err)
	}
	if _, err := svc.RemoveMachine(func() context.Context {
		c, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		t.Cleanup(cancel)
		return c
	}(), Meta{Actor: "admin"}, "198.18.0.11"); domain.ErrorCode(err) != domain.Unavailable {
		t.Fatalf("removal waiting past its deadline: %v; want unavailable", err)
	}
	if last, err := store.LastSeq(ctx); err != nil || last != 0 {
		t.Fatalf("the stream's last commit is %d (%v); a refused registration appended", last, err)
	}
	kv, err := js.KeyValue(ctx, secrets.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := kv.ListKeys(ctx); err != nil {
		t.Fatal(err)
	} else {
		for k := range keys.Keys() {
			t.Fatalf("the vault holds %s after a refused registration", k)
		}
	}

	<-svc.inventory // the other one is done
	if _, err := svc.RegisterMachine(ctx, Meta{Actor: "admin"}, req); err != nil {
		t.Fatalf("registration with the turn free: %v", err)
	}
	if len(svc.inventory) != 0 {
		t.Fatal("the registration kept its turn after it answered")
	}
}
