package busauth_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/embedded"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/testenv"
	"github.com/dmgr/dmgr/internal/workqueue"
	"github.com/dmgr/dmgr/projections"
)

// denied bounds an operation the bus must refuse: a refused JetStream
// request gets no answer, only a permissions violation on the connection,
// so the call ends at this deadline.
const denied = time.Second

var masterKey = bytes.Repeat([]byte{7}, secrets.KeySize)

// bus is a NATS server with dmgr's users, set up as a dmgr server leaves
// it: the streams, the vault and the package store, one commit, one
// credential, one package, one step for pool "default" and one for pool
// "z1" (whose agents have created their consumer), and the projector's
// consumer.
type bus struct {
	n        *embedded.NATS
	admin    jetstream.JetStream
	commit   eventstore.Commit
	credID   string
	secret   []byte
	pkgName  string
	pkgBytes []byte
}

func newBus(t *testing.T) *bus {
	t.Helper()
	ctx := testenv.Context(t, time.Minute)
	b := &bus{n: testenv.NATS(t, "z1")}
	_, b.admin = testenv.JetStream(t, b.n)

	// What the server does, with the server's credentials.
	_, js := testenv.JetStreamAs(t, b.n, busauth.Server, "")
	store, err := eventstore.Open(ctx, js, eventstore.Config{})
	must(t, err)
	vault, err := secrets.Open(ctx, js, masterKey, 1)
	must(t, err)
	pkgs, err := pkgstore.Open(ctx, js, 1)
	must(t, err)
	must(t, workqueue.Setup(ctx, js, workqueue.Config{}))
	b.commit = eventstore.Commit{CommitID: uuid.NewString(), AggregateType: "machine", AggregateID: "10.0.0.1",
		Time: time.Now().UTC(), Actor: "admin",
		Events: []eventstore.NewEvent{{Type: "MachineRegistered", Payload: json.RawMessage(`{"host":"10.0.0.1"}`)}}}
	_, err = store.Append(ctx, b.commit, eventstore.Expect{})
	must(t, err)
	b.secret = []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nnot really\n")
	b.credID, err = vault.Put(ctx, secrets.KindPrivateKey, b.secret, "10.0.0.1")
	must(t, err)
	// Incompressible, so that the object has many chunks, and large
	// enough that its reader gets flow-control requests.
	blob := make([]byte, 6<<20)
	_, _ = rand.Read(blob)
	b.pkgBytes = testenv.DMPackage(t, "v8.1.0", testenv.Entry{Name: "others/blob", Body: string(blob)})
	_, b.pkgName, err = pkgs.Put(ctx, "dm-v8.1.0-linux-amd64", bytes.NewReader(b.pkgBytes), pkgstore.DefaultLimits())
	must(t, err)
	for _, pool := range []string{"default", "z1"} {
		must(t, workqueue.PublishDispatch(ctx, js, pool, workqueue.Dispatch{Cluster: "prod-a", Operation: "op-1",
			Attempt: 1, Token: 1, Step: "step-" + pool}))
	}
	// The z1 agents have been running.
	_, z1 := testenv.JetStreamAs(t, b.n, busauth.Agent, "z1")
	_, err = z1.CreateOrUpdateConsumer(ctx, workqueue.StepsStream, workqueue.AgentConsumerConfig("z1", 30*time.Second))
	must(t, err)
	// The projector has its consumer.
	_, pj := testenv.JetStreamAs(t, b.n, busauth.Projector, "")
	_, err = pj.CreateOrUpdateConsumer(ctx, eventstore.StreamName, jetstream.ConsumerConfig{
		Durable: projections.ConsumerName(1), AckPolicy: jetstream.AckAllPolicy, MemoryStorage: true})
	must(t, err)
	return b
}

// client is a connection as one role that records the permission
// violations the server reports on it.
type client struct {
	t  *testing.T
	nc *nats.Conn
	js jetstream.JetStream

	mu         sync.Mutex
	violations []string
	changed    chan struct{}
}

func (b *bus) connect(t *testing.T, role busauth.Role, pool string) *client {
	t.Helper()
	c := &client{t: t, changed: make(chan struct{}, 1)}
	c.nc, c.js = testenv.JetStreamAs(t, b.n, role, pool, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			c.mu.Lock()
			c.violations = append(c.violations, err.Error())
			c.mu.Unlock()
			select {
			case c.changed <- struct{}{}:
			default:
			}
		}
	}))
	return c
}

// expectViolation waits until the server has reported that publishing
// to subject (a prefix of it) was refused.
func (c *client) expectViolation(subject string) {
	c.t.Helper()
	ctx := testenv.Context(c.t, 10*time.Second)
	for {
		c.mu.Lock()
		for _, v := range c.violations {
			if strings.Contains(v, `Publish to "`+subject) {
				c.mu.Unlock()
				return
			}
		}
		seen := append([]string(nil), c.violations...)
		c.mu.Unlock()
		select {
		case <-c.changed:
		case <-ctx.Done():
			c.t.Fatalf("no permissions violation for a publish to %q; violations: %q", subject, seen)
		}
	}
}

// expectNoViolation checks, after a round trip to the server, that it
// refused nothing on this connection.
func (c *client) expectNoViolation() {
	c.t.Helper()
	must(c.t, c.nc.FlushTimeout(5*time.Second))
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.violations) > 0 {
		c.t.Fatalf("permissions violations: %q", c.violations)
	}
}

// refused runs op, which must fail, under the deadline of a refused call.
func (c *client) refused(what string, op func(ctx context.Context) error) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), denied)
	defer cancel()
	if err := op(ctx); err == nil {
		c.t.Fatalf("%s: succeeded; it must be refused", what)
	}
}

func (b *bus) msgs(t *testing.T, stream string) uint64 {
	t.Helper()
	s, err := b.admin.Stream(testenv.Context(t, 10*time.Second), stream)
	must(t, err)
	return s.CachedInfo().State.Msgs
}

func (b *bus) consumerPending(t *testing.T, stream, name string) (pending uint64, delivered uint64) {
	t.Helper()
	cons, err := b.admin.Consumer(testenv.Context(t, 10*time.Second), stream, name)
	must(t, err)
	info := cons.CachedInfo()
	return info.NumPending, info.Delivered.Consumer
}

func TestAnAnonymousConnectionIsRefused(t *testing.T) {
	n := testenv.NATS(t)
	nc, err := nats.Connect(n.URL(), nats.Timeout(5*time.Second))
	if err == nil {
		nc.Close()
		t.Fatal("a connection without credentials was accepted")
	}
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("connect without credentials: %v; want an authorization violation", err)
	}
	// Neither is a key the server was not given.
	id := busauth.Identity{Role: busauth.Admin}
	stranger, err := busauth.EnsureSeeds(t.TempDir(), id)
	must(t, err)
	opts, err := busauth.ClientOptions(id, stranger[0].SeedFile)
	must(t, err)
	if nc, err := nats.Connect(n.URL(), append(opts, nats.Timeout(5*time.Second))...); err == nil {
		nc.Close()
		t.Fatal("a connection with an unknown nkey was accepted")
	}
	// The probe says the same.
	open, err := busauth.ProbeAnonymous(testenv.Context(t, 10*time.Second), n.URL())
	if err != nil || open != "" {
		t.Fatalf("probe of an authenticated bus: %q, %v", open, err)
	}
	anon := testenv.AnonymousNATS(t)
	open, err = busauth.ProbeAnonymous(testenv.Context(t, 10*time.Second), n.URL()+", "+anon.URL())
	if err != nil || open != anon.URL() {
		t.Fatalf("probe of a list with an open bus: %q, %v; want %q", open, err, anon.URL())
	}
	if _, err := busauth.ProbeAnonymous(testenv.Context(t, 10*time.Second), "nats://127.0.0.1:1"); !errors.Is(err, busauth.ErrNoAnswer) {
		t.Fatalf("probe of nothing: %v; want ErrNoAnswer", err)
	}
}

// An agent's credentials cannot append an event: the append fails, the
// server reports the refused publish, and the event stream is unchanged.
func TestAnAgentCannotAppendAnEvent(t *testing.T) {
	b := newBus(t)
	before := b.msgs(t, eventstore.StreamName)
	a := b.connect(t, busauth.Agent, "default")
	store, err := eventstore.OpenExisting(testenv.Context(t, 10*time.Second), a.js)
	must(t, err)
	forged := eventstore.Commit{CommitID: uuid.NewString(), AggregateType: "machine", AggregateID: "10.0.0.1",
		Time: time.Now().UTC(), Actor: "admin",
		Events: []eventstore.NewEvent{{Type: "MachineRemoved", Payload: json.RawMessage(`{}`)}}}
	a.refused("append as agent", func(ctx context.Context) error {
		_, err := store.Append(ctx, forged, eventstore.Expect{LastSeq: 1})
		return err
	})
	a.expectViolation("dmgr.ev.machine.10%2E0%2E0%2E1")
	// Nor by a plain publish.
	must(t, a.nc.Publish("dmgr.ev.cluster.prod-a", []byte(`{}`)))
	a.expectViolation("dmgr.ev.cluster.prod-a")
	if got := b.msgs(t, eventstore.StreamName); got != before {
		t.Fatalf("event stream holds %d messages, had %d", got, before)
	}
}

// An agent cannot put a step on any pool's work queue, its own included.
func TestAnAgentCannotPublishSteps(t *testing.T) {
	b := newBus(t)
	before := b.msgs(t, workqueue.StepsStream)
	a := b.connect(t, busauth.Agent, "default")
	for _, pool := range []string{"default", "z1"} {
		a.refused("publish a step to pool "+pool, func(ctx context.Context) error {
			return workqueue.PublishDispatch(ctx, a.js, pool, workqueue.Dispatch{Cluster: "prod-a", Operation: "op-x",
				Attempt: 1, Token: 99, Step: "forged"})
		})
		a.expectViolation("dmgr.step." + pool)
	}
	if got := b.msgs(t, workqueue.StepsStream); got != before {
		t.Fatalf("work queue holds %d messages, had %d", got, before)
	}
}

// An agent of pool default can neither create, read nor pull from the
// consumer of pool z1, nor point its own consumer at z1's steps.
func TestAnAgentCannotUseAnotherPoolsConsumer(t *testing.T) {
	b := newBus(t)
	pending, delivered := b.consumerPending(t, workqueue.StepsStream, workqueue.AgentConsumer("z1"))
	a := b.connect(t, busauth.Agent, "default")

	a.refused("create pool z1's consumer", func(ctx context.Context) error {
		_, err := a.js.CreateOrUpdateConsumer(ctx, workqueue.StepsStream, workqueue.AgentConsumerConfig("z1", time.Minute))
		return err
	})
	a.expectViolation("$JS.API.CONSUMER.CREATE.DMGR_STEPS.agents-z1.")
	a.refused("read pool z1's consumer", func(ctx context.Context) error {
		_, err := a.js.Consumer(ctx, workqueue.StepsStream, workqueue.AgentConsumer("z1"))
		return err
	})
	a.expectViolation("$JS.API.CONSUMER.INFO.DMGR_STEPS.agents-z1")
	a.refused("pull from pool z1's consumer", func(ctx context.Context) error {
		_, err := a.nc.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT.DMGR_STEPS.agents-z1", []byte(`{"batch":1}`))
		return err
	})
	a.expectViolation("$JS.API.CONSUMER.MSG.NEXT.DMGR_STEPS.agents-z1")
	a.refused("filter its own consumer on pool z1's steps", func(ctx context.Context) error {
		cfg := workqueue.AgentConsumerConfig("default", time.Minute)
		cfg.FilterSubject = workqueue.StepSubject("z1")
		_, err := a.js.CreateOrUpdateConsumer(ctx, workqueue.StepsStream, cfg)
		return err
	})
	a.expectViolation("$JS.API.CONSUMER.CREATE.DMGR_STEPS.agents-default.dmgr.step.z1")
	// The allowed create subject with a body that filters on z1: the
	// server refuses the mismatch.
	cfg := workqueue.AgentConsumerConfig("default", time.Minute)
	cfg.FilterSubject = workqueue.StepSubject("z1")
	body, _ := json.Marshal(map[string]any{"stream_name": workqueue.StepsStream, "config": cfg, "action": ""})
	resp, err := a.nc.Request("$JS.API.CONSUMER.CREATE.DMGR_STEPS.agents-default.dmgr.step.default", body, 5*time.Second)
	must(t, err)
	if !strings.Contains(string(resp.Data), `"error"`) {
		t.Fatalf("a consumer create whose body filters on another pool was answered %s", resp.Data)
	}

	p, d := b.consumerPending(t, workqueue.StepsStream, workqueue.AgentConsumer("z1"))
	if p != pending || d != delivered || p != 1 {
		t.Fatalf("pool z1's consumer: pending %d delivered %d, was %d and %d (want z1's step still waiting)", p, d, pending, delivered)
	}
	if _, err := b.admin.Consumer(testenv.Context(t, 10*time.Second), workqueue.StepsStream, workqueue.AgentConsumer("default")); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("pool default's consumer: %v; want none created", err)
	}
}

// An agent reads the vault and the package store and writes neither.
func TestAnAgentCannotWriteTheVaultOrThePackageStore(t *testing.T) {
	b := newBus(t)
	ctx := testenv.Context(t, time.Minute)
	a := b.connect(t, busauth.Agent, "default")
	kv, err := b.admin.KeyValue(ctx, secrets.Bucket)
	must(t, err)
	keysBefore, err := kv.ListKeys(ctx)
	must(t, err)
	var before []string
	for k := range keysBefore.Keys() {
		before = append(before, k)
	}
	vaultMsgs := b.msgs(t, "KV_"+secrets.Bucket)
	pkgMsgs := b.msgs(t, "OBJ_"+pkgstore.Bucket)

	vault, err := secrets.OpenExisting(ctx, a.js, masterKey)
	must(t, err)
	a.refused("put a credential", func(ctx context.Context) error {
		_, err := vault.Put(ctx, secrets.KindPassword, []byte("hunter2"), "10.0.0.1")
		return err
	})
	a.expectViolation("$KV.dmgr-secrets.cred-")
	a.refused("delete a credential", func(ctx context.Context) error { return vault.Delete(ctx, b.credID) })
	a.expectViolation("$KV.dmgr-secrets." + b.credID)
	a.refused("create the vault bucket", func(ctx context.Context) error {
		_, err := secrets.Open(ctx, a.js, masterKey, 1)
		return err
	})
	a.expectViolation("$JS.API.STREAM.CREATE.KV_dmgr-secrets")

	pkgs, err := pkgstore.OpenExisting(ctx, a.js)
	must(t, err)
	a.refused("upload a package", func(ctx context.Context) error {
		_, _, err := pkgs.Put(ctx, "dm-v9.9.9-linux-amd64", bytes.NewReader(testenv.DMPackage(t, "v9.9.9")), pkgstore.DefaultLimits())
		return err
	})
	a.expectViolation("$O.dmgr-packages.")
	a.refused("delete a package", func(ctx context.Context) error { return pkgs.Delete(ctx, b.pkgName) })

	if got := b.msgs(t, "KV_"+secrets.Bucket); got != vaultMsgs {
		t.Fatalf("vault bucket holds %d messages, had %d", got, vaultMsgs)
	}
	if got := b.msgs(t, "OBJ_"+pkgstore.Bucket); got != pkgMsgs {
		t.Fatalf("package store holds %d messages, had %d", got, pkgMsgs)
	}
	if len(before) != 1 || before[0] != b.credID {
		t.Fatalf("vault keys %v; want only %s", before, b.credID)
	}
	if _, got, err := (mustVault(t, b)).Get(ctx, b.credID, "10.0.0.1"); err != nil || !bytes.Equal(got, b.secret) {
		t.Fatalf("credential after the attempts: %q, %v", got, err)
	}
}

func mustVault(t *testing.T, b *bus) *secrets.Vault {
	t.Helper()
	v, err := secrets.OpenExisting(testenv.Context(t, 10*time.Second), b.admin, masterKey)
	must(t, err)
	return v
}

// An agent cannot delete or purge a stream, delete the projector's
// consumer or another pool's, or change a stream.
func TestAnAgentCannotDeleteOrPurgeStreamsNorConsumers(t *testing.T) {
	b := newBus(t)
	ctx := testenv.Context(t, time.Minute)
	a := b.connect(t, busauth.Agent, "default")
	counts := map[string]uint64{}
	streams := []string{eventstore.StreamName, workqueue.StepsStream, workqueue.ResultsStream, "KV_" + secrets.Bucket, "OBJ_" + pkgstore.Bucket}
	for _, s := range streams {
		counts[s] = b.msgs(t, s)
	}
	for _, s := range streams {
		a.refused("delete stream "+s, func(ctx context.Context) error { return a.js.DeleteStream(ctx, s) })
		a.expectViolation("$JS.API.STREAM.DELETE." + s)
		a.refused("purge stream "+s, func(ctx context.Context) error {
			_, err := a.nc.RequestWithContext(ctx, "$JS.API.STREAM.PURGE."+s, []byte(`{}`))
			return err
		})
		a.expectViolation("$JS.API.STREAM.PURGE." + s)
	}
	a.refused("delete the projector's consumer", func(ctx context.Context) error {
		return a.js.DeleteConsumer(ctx, eventstore.StreamName, projections.ConsumerName(1))
	})
	a.expectViolation("$JS.API.CONSUMER.DELETE.DMGR_EVENTS." + projections.ConsumerName(1))
	a.refused("delete pool z1's consumer", func(ctx context.Context) error {
		return a.js.DeleteConsumer(ctx, workqueue.StepsStream, workqueue.AgentConsumer("z1"))
	})
	a.expectViolation("$JS.API.CONSUMER.DELETE.DMGR_STEPS.agents-z1")
	a.refused("make the event stream deletable", func(ctx context.Context) error {
		_, err := a.js.UpdateStream(ctx, jetstream.StreamConfig{Name: eventstore.StreamName, Subjects: []string{eventstore.AllSubjects}, MaxMsgs: 1})
		return err
	})
	a.expectViolation("$JS.API.STREAM.UPDATE.DMGR_EVENTS")
	a.refused("read the event stream through a consumer of its own", func(ctx context.Context) error {
		_, err := a.js.CreateConsumer(ctx, eventstore.StreamName, jetstream.ConsumerConfig{Name: "snoop"})
		return err
	})
	a.expectViolation("$JS.API.CONSUMER.CREATE.DMGR_EVENTS.snoop")

	for _, s := range streams {
		if got := b.msgs(t, s); got != counts[s] {
			t.Fatalf("stream %s holds %d messages, had %d", s, got, counts[s])
		}
	}
	for _, c := range []struct{ stream, name string }{
		{eventstore.StreamName, projections.ConsumerName(1)}, {workqueue.StepsStream, workqueue.AgentConsumer("z1")},
	} {
		if _, err := b.admin.Consumer(ctx, c.stream, c.name); err != nil {
			t.Fatalf("consumer %s of %s: %v", c.name, c.stream, err)
		}
	}
}

// An agent may subscribe below its own inbox prefix only: not to another
// role's inbox, not to another pool's, not to the bus's subjects.
func TestAnAgentCannotSubscribeToAnotherRolesInbox(t *testing.T) {
	b := newBus(t)
	nc, _ := testenv.JetStreamAs(t, b.n, busauth.Agent, "default", nats.PermissionErrOnSubscribe(true))
	for _, subject := range []string{"_INBOX_server.>", "_INBOX_projector.>", "_INBOX_admin.>", "_INBOX_agent.z1.>",
		"_INBOX.>", "dmgr.ev.>", "dmgr.step.>", "dmgr.result.>", "$KV.>", ">"} {
		sub, err := nc.SubscribeSync(subject)
		must(t, err)
		must(t, nc.Flush())
		_, err = sub.NextMsg(5 * time.Second)
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("subscribe %s: %v; want a permissions violation", subject, err)
		}
	}
	// Its own inbox works (the subscription flushed to the server before
	// the admin publishes, or the message may pass before it).
	sub, err := nc.SubscribeSync(nc.NewInbox())
	must(t, err)
	must(t, nc.Flush())
	admin := b.connect(t, busauth.Admin, "").nc
	must(t, admin.Publish(sub.Subject, []byte("hi")))
	must(t, admin.Flush())
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "hi" {
		t.Fatalf("own inbox: %v", err)
	}
	if !strings.HasPrefix(sub.Subject, "_INBOX_agent.default.") {
		t.Fatalf("inbox %s is not below the agent's prefix", sub.Subject)
	}
}

// What an agent does for a step, through the code that does it: take its
// pool's step and ack it, publish the result, read the commits of an
// aggregate, a credential and a package. The server refuses none of it.
func TestAnAgentCanDoWhatItsStepsNeed(t *testing.T) {
	b := newBus(t)
	ctx := testenv.Context(t, time.Minute)
	a := b.connect(t, busauth.Agent, "default")

	cons, err := a.js.CreateOrUpdateConsumer(ctx, workqueue.StepsStream, workqueue.AgentConsumerConfig("default", 30*time.Second))
	must(t, err)
	if _, err := cons.Info(ctx); err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	must(t, err)
	var got []workqueue.Dispatch
	for msg := range batch.Messages() {
		d, err := workqueue.DecodeDispatch(msg.Data())
		must(t, err)
		got = append(got, d)
		must(t, msg.InProgress())
		must(t, workqueue.PublishResult(ctx, a.js, workqueue.Result{Cluster: d.Cluster, Operation: d.Operation,
			Attempt: d.Attempt, Token: d.Token, Step: d.Step, Agent: "agent-1", Finished: true, OK: true}))
		must(t, msg.DoubleAck(ctx))
	}
	must(t, batch.Error())
	if len(got) != 1 || got[0].Step != "step-default" {
		t.Fatalf("fetched %+v; want the one step of pool default", got)
	}
	if n := b.msgs(t, workqueue.ResultsStream); n != 1 {
		t.Fatalf("results stream holds %d messages; want the agent's result", n)
	}
	if p, _ := b.consumerPending(t, workqueue.StepsStream, workqueue.AgentConsumer("z1")); p != 1 {
		t.Fatalf("pool z1's step: pending %d; want it left for z1", p)
	}

	store, err := eventstore.OpenExisting(ctx, a.js)
	must(t, err)
	st, err := store.LoadSince(ctx, b.commit.AggregateType, b.commit.AggregateID, 0)
	must(t, err)
	if len(st.Events) != 1 || st.Events[0].CommitID != b.commit.CommitID || st.LastSeq != 1 {
		t.Fatalf("LoadSince: %+v", st)
	}

	vault, err := secrets.OpenExisting(ctx, a.js, masterKey)
	must(t, err)
	kind, secret, err := vault.Get(ctx, b.credID, "10.0.0.1")
	must(t, err)
	if kind != secrets.KindPrivateKey || !bytes.Equal(secret, b.secret) {
		t.Fatalf("vault get: %s %q", kind, secret)
	}

	pkgs, err := pkgstore.OpenExisting(ctx, a.js)
	must(t, err)
	var body bytes.Buffer
	_, err = pkgs.Fetch(ctx, b.pkgName, &body, pkgstore.FetchOptions{})
	must(t, err)
	if !bytes.Equal(body.Bytes(), b.pkgBytes) {
		t.Fatalf("package read back: %d bytes, stored %d", body.Len(), len(b.pkgBytes))
	}
	// The reader deletes its consumer once it has every chunk.
	for {
		s, err := b.admin.Stream(ctx, "OBJ_"+pkgstore.Bucket)
		must(t, err)
		if s.CachedInfo().State.Consumers == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the package reader's consumer was not deleted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.expectNoViolation()
}

// The projector reads the event stream through its own durable consumer
// and by direct get, and acks; it appends nothing and reads no secret.
func TestTheProjectorReadsTheEventStreamAndWritesNothing(t *testing.T) {
	b := newBus(t)
	ctx := testenv.Context(t, time.Minute)
	p := b.connect(t, busauth.Projector, "")
	store, err := eventstore.OpenExisting(ctx, p.js)
	must(t, err)
	cons, err := p.js.CreateOrUpdateConsumer(ctx, eventstore.StreamName, jetstream.ConsumerConfig{
		Durable: projections.ConsumerName(2), AckPolicy: jetstream.AckAllPolicy, MemoryStorage: true})
	must(t, err)
	batch, err := cons.Fetch(10, jetstream.FetchMaxWait(time.Second))
	must(t, err)
	n := 0
	for msg := range batch.Messages() {
		n++
		must(t, msg.Ack())
	}
	if n != 1 {
		t.Fatalf("fetched %d commits; want 1", n)
	}
	if _, err := store.LoadSince(ctx, b.commit.AggregateType, b.commit.AggregateID, 0); err != nil {
		t.Fatal(err)
	}
	must(t, p.js.DeleteConsumer(ctx, eventstore.StreamName, projections.ConsumerName(2)))
	p.expectNoViolation()

	before := b.msgs(t, eventstore.StreamName)
	p.refused("append as projector", func(ctx context.Context) error {
		_, err := store.Append(ctx, eventstore.Commit{CommitID: uuid.NewString(), AggregateType: "machine", AggregateID: "x",
			Events: []eventstore.NewEvent{{Type: "MachineRemoved", Payload: json.RawMessage(`{}`)}}}, eventstore.Expect{})
		return err
	})
	p.expectViolation("dmgr.ev.machine.x")
	p.refused("read a credential", func(ctx context.Context) error {
		_, err := secrets.OpenExisting(ctx, p.js, masterKey)
		return err
	})
	p.expectViolation("$JS.API.STREAM.INFO.KV_dmgr-secrets")
	p.refused("publish a step", func(ctx context.Context) error {
		return workqueue.PublishDispatch(ctx, p.js, "default", workqueue.Dispatch{Step: "x"})
	})
	p.expectViolation("dmgr.step.default")
	if got := b.msgs(t, eventstore.StreamName); got != before {
		t.Fatalf("event stream holds %d messages, had %d", got, before)
	}
}

// The server appends, but cannot delete the event stream (nor any other).
func TestTheServerCannotDeleteTheEventStream(t *testing.T) {
	b := newBus(t)
	s := b.connect(t, busauth.Server, "")
	s.refused("delete the event stream", func(ctx context.Context) error { return s.js.DeleteStream(ctx, eventstore.StreamName) })
	s.expectViolation("$JS.API.STREAM.DELETE.DMGR_EVENTS")
	if got := b.msgs(t, eventstore.StreamName); got != 1 {
		t.Fatalf("event stream holds %d messages; want 1", got)
	}
}

// An agent may create an ordered push consumer on the package chunks (an
// object Get does), and so choose where the server delivers them. The
// server delivers only when something subscribes to that exact subject,
// and no dmgr process subscribes to an event or step subject, so chunks
// aimed at the event stream land nowhere. (nats-server does not check the
// deliver subject against the creator's permissions: nats-io/nats-server
// issue 8274.)
func TestAnAgentsPushConsumerCannotDeliverIntoTheEventStream(t *testing.T) {
	b := newBus(t)
	ctx := testenv.Context(t, time.Minute)
	obs, err := b.admin.ObjectStore(ctx, pkgstore.Bucket)
	must(t, err)
	info, err := obs.GetInfo(ctx, b.pkgName)
	must(t, err)
	events, steps := b.msgs(t, eventstore.StreamName), b.msgs(t, workqueue.StepsStream)
	a := b.connect(t, busauth.Agent, "default")
	for i, target := range []string{"dmgr.ev.cluster.prod-a", "dmgr.step.default"} {
		name := "evil" + string(rune('a'+i))
		_, err := a.js.CreateConsumer(ctx, "OBJ_"+pkgstore.Bucket, jetstream.ConsumerConfig{Name: name,
			FilterSubject: "$O." + pkgstore.Bucket + ".C." + info.NUID, DeliverSubject: target, AckPolicy: jetstream.AckNonePolicy})
		must(t, err)
	}
	// A control consumer, created after them, delivers to a subject that
	// a client subscribes to: once it has delivered every chunk, the
	// server has had its chance to deliver for the others.
	ctl := b.connect(t, busauth.Admin, "")
	sub, err := ctl.nc.SubscribeSync("test.control")
	must(t, err)
	must(t, ctl.nc.Flush())
	_, err = a.js.CreateConsumer(ctx, "OBJ_"+pkgstore.Bucket, jetstream.ConsumerConfig{Name: "control",
		FilterSubject: "$O." + pkgstore.Bucket + ".C." + info.NUID, DeliverSubject: "test.control", AckPolicy: jetstream.AckNonePolicy})
	must(t, err)
	for i := range int(info.Chunks) {
		if _, err := sub.NextMsg(10 * time.Second); err != nil {
			t.Fatalf("control consumer: chunk %d of %d: %v", i+1, info.Chunks, err)
		}
	}
	if e, s := b.msgs(t, eventstore.StreamName), b.msgs(t, workqueue.StepsStream); e != events || s != steps {
		t.Fatalf("event stream %d (was %d), work queue %d (was %d) messages", e, events, s, steps)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The server's operation index tails the event stream with a headers-only
// ordered consumer: the server's own credentials allow it, with no
// permission beyond those it appends with. An agent's do not (it reads
// the stream by direct get only); the projector, which reads every
// commit anyway, may.
func TestTheServerTailsTheEventStreamForItsOperationIndex(t *testing.T) {
	b := newBus(t)
	ctx := testenv.Context(t, time.Minute)
	s := b.connect(t, busauth.Server, "")
	store, err := eventstore.OpenExisting(ctx, s.js)
	must(t, err)
	op := uuid.NewString()
	_, err = store.Append(ctx, eventstore.Commit{CommitID: uuid.NewString(), AggregateType: "cluster", AggregateID: "prod-a",
		Time: time.Now().UTC(), Actor: "admin", OperationID: op,
		Events: []eventstore.NewEvent{{Type: "OperationRequested", Payload: json.RawMessage(`{}`)}}}, eventstore.Expect{})
	must(t, err)
	idx := store.NewOperationIndex("cluster")
	defer idx.Close()
	ref, ok, err := idx.Lookup(ctx, op)
	if err != nil || !ok || ref.Home != "prod-a" {
		t.Fatalf("lookup as server: %+v %v %v; want cluster prod-a", ref, ok, err)
	}
	s.expectNoViolation()

	a := b.connect(t, busauth.Agent, "default")
	astore, err := eventstore.OpenExisting(ctx, a.js)
	must(t, err)
	aidx := astore.NewOperationIndex("cluster")
	defer aidx.Close()
	a.refused("tail the event stream as an agent", func(ctx context.Context) error {
		_, _, err := aidx.Lookup(ctx, op)
		return err
	})
	a.expectViolation("$JS.API.CONSUMER.CREATE.DMGR_EVENTS")
}

// The users' password hashes are in a bucket of their own that an agent,
// which may read the machines' credentials, cannot read or write.
func TestAnAgentCannotReadOrWriteThePasswords(t *testing.T) {
	b := newBus(t)
	ctx := testenv.Context(t, time.Minute)
	pw, err := secrets.OpenPasswords(ctx, b.admin, masterKey, 1)
	must(t, err)
	ref, err := pw.Put(ctx, secrets.KindPasswordHash, []byte("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$a2V5"), "user:alice")
	must(t, err)

	a := b.connect(t, busauth.Agent, "default")
	a.refused("read the passwords bucket", func(ctx context.Context) error {
		kv, err := a.js.KeyValue(ctx, secrets.PasswordsBucket)
		if err != nil {
			return err
		}
		_, err = kv.Get(ctx, ref)
		return err
	})
	a.expectViolation("$JS.API.STREAM.INFO.KV_" + secrets.PasswordsBucket)
	a.refused("write the passwords bucket", func(ctx context.Context) error {
		_, err := a.js.Publish(ctx, "$KV."+secrets.PasswordsBucket+".cred-x", []byte("x"))
		return err
	})
	a.expectViolation("$KV." + secrets.PasswordsBucket + ".cred-x")

	s := b.connect(t, busauth.Server, "")
	spw, err := secrets.OpenPasswords(ctx, s.js, masterKey, 1)
	must(t, err)
	if _, got, err := spw.Get(ctx, ref, "user:alice"); err != nil || !bytes.HasPrefix(got, []byte("$argon2id$")) {
		t.Fatalf("the server reads the hash: %q, %v", got, err)
	}
	s.expectNoViolation()
}
