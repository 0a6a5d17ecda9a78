package pkgstore

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/embedded"
	"github.com/dmgr/dmgr/internal/testenv"
)

// restartableBus is an embedded NATS server that a test can stop and start
// again on the same address and store, with dmgr's users.
type restartableBus struct {
	t     *testing.T
	addr  string
	store string
	users []busauth.User
	srv   *embedded.NATS
}

func startRestartableBus(t *testing.T) *restartableBus {
	t.Helper()
	users, err := busauth.EnsureSeeds(filepath.Join(t.TempDir(), "creds"),
		busauth.Identity{Role: busauth.Server}, busauth.Identity{Role: busauth.Agent, Pool: busauth.DefaultPool})
	if err != nil {
		t.Fatal(err)
	}
	b := &restartableBus{t: t, store: t.TempDir(), users: users}
	b.srv, err = embedded.StartNATS("127.0.0.1:0", b.store, embedded.NATSUsers(users))
	if err != nil {
		t.Fatal(err)
	}
	b.addr = strings.TrimPrefix(b.srv.URL(), "nats://")
	t.Cleanup(func() { b.srv.Shutdown() })
	return b
}

// restart stops the server and starts it again after down; it returns at
// once, and the returned channel is closed once the server is back.
func (b *restartableBus) restart(down time.Duration) <-chan struct{} {
	b.srv.Shutdown()
	back := make(chan struct{})
	go func() {
		defer close(back)
		time.Sleep(down)
		srv, err := embedded.StartNATS(b.addr, b.store, embedded.NATSUsers(b.users))
		if err != nil {
			b.t.Errorf("start nats again: %v", err)
			return
		}
		b.srv = srv
	}()
	return back
}

// connect opens the package store as role (the server creates the bucket,
// an agent binds to it), reconnecting for as long as the test runs.
func (b *restartableBus) connect(role busauth.Role) *Store {
	b.t.Helper()
	id := busauth.Identity{Role: role}
	if role == busauth.Agent {
		id.Pool = busauth.DefaultPool
	}
	var seed string
	for _, u := range b.users {
		if u.Identity == id {
			seed = u.SeedFile
		}
	}
	opts, err := busauth.ClientOptions(id, seed)
	if err != nil {
		b.t.Fatal(err)
	}
	nc, err := nats.Connect(b.srv.URL(), append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))...)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.t.Fatal(err)
	}
	ctx := testenv.Context(b.t, time.Minute)
	var s *Store
	if role == busauth.Server {
		s, err = Open(ctx, js, 1)
	} else {
		s, err = OpenExisting(ctx, js)
	}
	if err != nil {
		b.t.Fatal(err)
	}
	return s
}

// putNoise stores a valid package holding n bytes of incompressible data.
func putNoise(t *testing.T, s *Store, n int) (string, []byte) {
	t.Helper()
	noise := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{3}).Read(noise)
	body := tgz(t, with(layout(""), file("bin/noise", string(noise)))...)
	_, name, err := s.Put(testenv.Context(t, time.Minute), "", bytes.NewReader(body), DefaultLimits())
	requireNoError(t, err)
	return name, body
}

// hookWriter calls hook once, after at least after bytes were written.
type hookWriter struct {
	buf   bytes.Buffer
	after int
	hook  func()
	done  bool
}

func (w *hookWriter) Write(p []byte) (int, error) {
	n, err := w.buf.Write(p)
	if !w.done && w.buf.Len() >= w.after {
		w.done = true
		w.hook()
	}
	return n, err
}

// The object store's own Get gives the whole read one deadline: the
// context's, or 5 s (the JetStream API timeout) when it has none, so a
// large package or a slow reader fails half way with "nats: timeout" or
// "read pipe: i/o timeout". Fetch reads on through a pause longer than
// that, with no deadline on the context, because it pulls the next chunks
// only when the writer has taken the last ones.
func TestFetchOutlastsTheAPITimeout(t *testing.T) {
	s, _ := openStore(t)
	name, body := putNoise(t, s, 8<<20)
	w := &hookWriter{after: 2 << 20, hook: func() { time.Sleep(6 * time.Second) }}
	info, err := s.Fetch(context.Background(), name, w, FetchOptions{})
	requireNoError(t, err)
	if !bytes.Equal(w.buf.Bytes(), body) || info.Size != int64(len(body)) || info.SHA256 != sha(body) {
		t.Fatalf("fetched %d bytes (info %+v), stored %d", w.buf.Len(), info, len(body))
	}
	if st := s.Stats(); st.Fetches != 1 || st.Resumes != 0 || st.Bytes != int64(len(body)) {
		t.Errorf("stats %+v", st)
	}
}

// A read cut by a restart of the NATS server, down for longer than the
// read waits for a chunk, carries on once it is back, from the chunk after
// the last one written: the content is whole and checked, and the reader
// never sees a byte twice.
func TestFetchSurvivesARestartOfTheBus(t *testing.T) {
	b := startRestartableBus(t)
	server := b.connect(busauth.Server)
	name, body := putNoise(t, server, 16<<20)
	agent := b.connect(busauth.Agent)
	logs := &testenv.Buffer{}
	var back <-chan struct{}
	w := &hookWriter{after: 4 << 20, hook: func() { back = b.restart(3 * time.Second) }}
	ctx := testenv.Context(t, 2*time.Minute)
	_, err := agent.Fetch(ctx, name, w, FetchOptions{Idle: time.Second, Attempts: 30, Log: zerolog.New(logs)})
	<-back
	if err != nil {
		t.Fatalf("fetch across a restart: %v\n%s", err, logs.String())
	}
	if !bytes.Equal(w.buf.Bytes(), body) {
		t.Fatalf("fetched %d bytes that differ from the %d stored", w.buf.Len(), len(body))
	}
	t.Logf("resumed reads: %d; log:\n%s", agent.Stats().Resumes, logs.String())
}

// A missing object is NotFound; the deadline of a read grows with the
// object's size.
func TestFetchDeadlineGrowsWithTheSize(t *testing.T) {
	var o FetchOptions
	if got := o.Deadline(0); got != DefaultFetchBase {
		t.Errorf("deadline of an empty object: %s", got)
	}
	if got, want := o.Deadline(252<<20), DefaultFetchBase+252*time.Second; got != want {
		t.Errorf("deadline of 252 MiB: %s, want %s", got, want)
	}
	o = FetchOptions{MinRate: 10 << 20, Base: time.Second}
	if got := o.Deadline(100 << 20); got != 11*time.Second {
		t.Errorf("deadline of 100 MiB at 10 MiB/s: %s", got)
	}
	s, ctx := openStore(t)
	_, err := s.Fetch(ctx, "sha256/"+sha([]byte("nothing")), io.Discard, FetchOptions{})
	requireCode(t, err, "not_found", "is not stored")
}
