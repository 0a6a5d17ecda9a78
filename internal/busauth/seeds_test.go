package busauth_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/testenv"
	"github.com/dmgr/dmgr/internal/workqueue"
)

var allIDs = []busauth.Identity{{Role: busauth.Server}, {Role: busauth.Projector}, {Role: busauth.Admin},
	{Role: busauth.Agent, Pool: "default"}, {Role: busauth.Agent, Pool: "z1"}}

// Seeds are written once, 0600 in a 0700 directory, and read back
// unchanged; a seed file others may read is refused.
func TestSeedsAreWrittenOnceAndOnlyTheOwnerMayReadThem(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "creds")
	users, err := busauth.EnsureSeeds(dir, allIDs...)
	must(t, err)
	fi, err := os.Stat(dir)
	must(t, err)
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("creds dir mode %04o; want 0700", fi.Mode().Perm())
	}
	want := map[string]bool{"nats-server.nk": true, "nats-projector.nk": true, "nats-admin.nk": true,
		"nats-agent.nk": true, "nats-agent-z1.nk": true}
	entries, err := os.ReadDir(dir)
	must(t, err)
	if len(entries) != len(want) {
		t.Fatalf("creds dir holds %v; want %v", entries, want)
	}
	keys := map[string]bool{}
	for _, u := range users {
		if !want[filepath.Base(u.SeedFile)] || !u.Created || !nkeys.IsValidPublicUserKey(u.PublicKey) {
			t.Fatalf("user %+v", u)
		}
		fi, err := os.Stat(u.SeedFile)
		must(t, err)
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %04o; want 0600", u.SeedFile, fi.Mode().Perm())
		}
		if keys[u.PublicKey] {
			t.Fatalf("two roles share the key %s", u.PublicKey)
		}
		keys[u.PublicKey] = true
	}

	// A second start keeps every seed.
	must(t, os.Chmod(dir, 0o755))
	again, err := busauth.EnsureSeeds(dir, allIDs...)
	must(t, err)
	for i, u := range again {
		if u.Created || u.PublicKey != users[i].PublicKey {
			t.Fatalf("second start: %+v; want %+v kept", u, users[i])
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("creds dir mode %04o after a second start; want 0700 again", fi.Mode().Perm())
	}

	// Refused: a seed others may read, a file holding no seed, a seed
	// that is not a user's, an invalid identity.
	agent := users[3]
	must(t, os.Chmod(agent.SeedFile, 0o640))
	if _, err := busauth.ClientOptions(agent.Identity, agent.SeedFile); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable seed: %v", err)
	}
	must(t, os.Chmod(agent.SeedFile, 0o600))
	bad := filepath.Join(dir, "bad.nk")
	must(t, os.WriteFile(bad, []byte("not a seed\n"), 0o600))
	if _, err := busauth.LoadSeed(bad, agent.Identity); err == nil {
		t.Fatal("a file without a seed was accepted")
	}
	acct, _ := nkeys.CreateAccount()
	aseed, _ := acct.Seed()
	must(t, os.WriteFile(bad, aseed, 0o600))
	if _, err := busauth.LoadSeed(bad, agent.Identity); err == nil {
		t.Fatal("an account seed was accepted as a user's")
	}
	for _, id := range []busauth.Identity{{Role: busauth.Agent}, {Role: busauth.Agent, Pool: "a.b"},
		{Role: busauth.Agent, Pool: "*"}, {Role: busauth.Server, Pool: "x"}, {Role: "root"}} {
		if _, err := busauth.EnsureSeeds(t.TempDir(), id); err == nil {
			t.Fatalf("identity %+v accepted", id)
		}
	}
}

// The block `dmgr bus init` renders is read by nats-server's own
// configuration parser; a server run from it takes the seeds' owners with
// their permissions and nobody else.
func TestTheRenderedConfigurationRunsAnAuthenticatedServer(t *testing.T) {
	dir := t.TempDir()
	users, err := busauth.EnsureSeeds(filepath.Join(dir, "creds"), allIDs...)
	must(t, err)
	must(t, busauth.WriteConfig(filepath.Join(dir, busauth.ConfigFileName), users))
	conf := filepath.Join(dir, "nats-server.conf")
	must(t, os.WriteFile(conf, []byte("host: 127.0.0.1\nport: -1\njetstream {\n  store_dir: \""+filepath.Join(dir, "js")+"\"\n}\ninclude ./"+busauth.ConfigFileName+"\n"), 0o644))
	opts, err := server.ProcessConfigFile(conf)
	must(t, err)
	if opts.NoAuthUser != "" || len(opts.Nkeys) != len(users) {
		t.Fatalf("parsed: no_auth_user %q, %d nkey users; want none and %d", opts.NoAuthUser, len(opts.Nkeys), len(users))
	}
	for i, nk := range opts.Nkeys {
		want := busauth.NkeyUsers(users)[i]
		if nk.Nkey != want.Nkey || strings.Join(nk.Permissions.Publish.Allow, " ") != strings.Join(want.Permissions.Publish.Allow, " ") ||
			strings.Join(nk.Permissions.Publish.Deny, " ") != strings.Join(want.Permissions.Publish.Deny, " ") ||
			strings.Join(nk.Permissions.Subscribe.Allow, " ") != strings.Join(want.Permissions.Subscribe.Allow, " ") {
			t.Fatalf("user %d parsed as %+v %+v; want %+v %+v", i, nk, nk.Permissions, want, want.Permissions)
		}
	}
	opts.NoSigs, opts.NoLog = true, true
	srv, err := server.NewServer(opts)
	must(t, err)
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server from the rendered configuration did not start")
	}
	url := srv.ClientURL()
	if nc, err := nats.Connect(url); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("anonymous connection: %v; want refused", err)
	}
	ctx := testenv.Context(t, time.Minute)
	connect := func(u busauth.User) (*nats.Conn, jetstream.JetStream) {
		opts, err := busauth.ClientOptions(u.Identity, u.SeedFile)
		must(t, err)
		nc, err := nats.Connect(url, opts...)
		must(t, err)
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		must(t, err)
		return nc, js
	}
	_, srvJS := connect(users[0])
	_, err = eventstore.Open(ctx, srvJS, eventstore.Config{})
	must(t, err)
	must(t, workqueue.Setup(ctx, srvJS, workqueue.Config{}))
	_, agent := connect(users[3])
	if _, err := agent.CreateOrUpdateConsumer(ctx, workqueue.StepsStream, workqueue.AgentConsumerConfig("default", time.Minute)); err != nil {
		t.Fatalf("agent's own consumer: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, denied)
	defer cancel()
	if _, err := agent.Publish(short, "dmgr.ev.machine.x", []byte("{}")); err == nil {
		t.Fatal("the agent appended to the event stream")
	}
	s, err := srvJS.Stream(ctx, eventstore.StreamName)
	must(t, err)
	if s.CachedInfo().State.Msgs != 0 {
		t.Fatalf("event stream holds %d messages; want 0", s.CachedInfo().State.Msgs)
	}
}

// busauth spells out names that other packages own (it cannot import
// them); they must stay equal.
func TestNamesMatchThePackagesThatOwnThem(t *testing.T) {
	perms := busauth.Identity{Role: busauth.Agent, Pool: "z1"}.Permissions()
	all := strings.Join(perms.Publish.Allow, " ")
	for _, want := range []string{
		"$JS.API.CONSUMER.CREATE." + workqueue.StepsStream + "." + workqueue.AgentConsumer("z1") + "." + workqueue.StepSubject("z1"),
		"$JS.API.CONSUMER.MSG.NEXT." + workqueue.StepsStream + "." + workqueue.AgentConsumer("z1"),
		"$JS.API.DIRECT.GET." + eventstore.StreamName,
		"$JS.API.STREAM.INFO.KV_" + secrets.Bucket,
		"$JS.API.STREAM.INFO.OBJ_" + pkgstore.Bucket,
		strings.TrimSuffix(workqueue.ResultSubject("x"), "x") + ">",
	} {
		if !strings.Contains(" "+all+" ", " "+want+" ") {
			t.Errorf("agent permissions lack %q:\n%s", want, all)
		}
	}
	if deny := strings.Join(perms.Publish.Deny, " "); !strings.Contains(deny, eventstore.AllSubjects) {
		t.Errorf("agent deny-list %q lacks %q", deny, eventstore.AllSubjects)
	}
	if busauth.DefaultPool != workqueue.DefaultPool {
		t.Errorf("busauth.DefaultPool %q, workqueue.DefaultPool %q", busauth.DefaultPool, workqueue.DefaultPool)
	}
}
