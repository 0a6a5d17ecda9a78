package pkgstore

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/domain"
)

func openStore(t *testing.T) (*Store, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	js := runJetStream(t)
	s, err := Open(ctx, js, 1)
	requireNoError(t, err)
	// Opening again binds to the same bucket.
	s2, err := Open(ctx, js, 1)
	requireNoError(t, err)
	if s2 == nil {
		t.Fatal("second Open returned nil")
	}
	return s, ctx
}

// objectNames lists the bucket, deleted objects included when showDeleted.
func objectNames(t *testing.T, ctx context.Context, s *Store, showDeleted bool) []string {
	t.Helper()
	var opts []jetstream.ListObjectsOpt
	if showDeleted {
		opts = append(opts, jetstream.ListObjectsShowDeleted())
	}
	infos, err := s.obs.List(ctx, opts...)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	requireNoError(t, err)
	var names []string
	for _, info := range infos {
		names = append(names, info.Name)
	}
	slices.Sort(names)
	return names
}

// requireEmptyBucket checks that the bucket holds no object, not even a
// deleted one, and that its stream holds no message at all.
func requireEmptyBucket(t *testing.T, ctx context.Context, s *Store) {
	t.Helper()
	if names := objectNames(t, ctx, s, true); len(names) != 0 {
		t.Errorf("bucket holds %v, want nothing", names)
	}
	st, err := s.obs.Status(ctx)
	requireNoError(t, err)
	if n := st.(*jetstream.ObjectBucketStatus).StreamInfo().State.Msgs; n != 0 {
		t.Errorf("bucket stream holds %d messages, want 0", n)
	}
}

func readAll(t *testing.T, ctx context.Context, s *Store, name string) []byte {
	t.Helper()
	var b bytes.Buffer
	_, err := s.Fetch(ctx, name, &b, FetchOptions{})
	requireNoError(t, err)
	return b.Bytes()
}

// bigPackage is a valid package larger than one object store chunk.
func bigPackage(t *testing.T) []byte {
	rng := rand.New(rand.NewPCG(5, 6))
	noise := make([]byte, 1<<20)
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	return tgz(t, with(layout(""), file("bin/noise", string(noise)))...)
}

func TestStorePut(t *testing.T) {
	s, ctx := openStore(t)
	body := bigPackage(t)

	m, name, err := s.Put(ctx, "", bytes.NewReader(body), DefaultLimits())
	requireNoError(t, err)
	if want := "sha256/" + sha(body); name != want {
		t.Errorf("name = %q, want %q", name, want)
	}
	if m.SHA256 != sha(body) || m.Size != int64(len(body)) || !slices.Contains(m.Components, "dm-worker") {
		t.Errorf("manifest = %+v", m)
	}
	if got := objectNames(t, ctx, s, false); !slices.Equal(got, []string{name}) {
		t.Errorf("bucket holds %v, want only %s", got, name)
	}
	if got := readAll(t, ctx, s, name); !bytes.Equal(got, body) {
		t.Errorf("Open(%s) returned %d bytes that differ from the %d put", name, len(got), len(body))
	}

	// The same package again: same name, still one object.
	m2, name2, err := s.Put(ctx, "", bytes.NewReader(body), DefaultLimits())
	requireNoError(t, err)
	if name2 != name || m2.SHA256 != m.SHA256 {
		t.Errorf("second Put = %q, want %q", name2, name)
	}
	if got := objectNames(t, ctx, s, false); !slices.Equal(got, []string{name}) {
		t.Errorf("after a second Put the bucket holds %v, want only %s", got, name)
	}
	if got := readAll(t, ctx, s, name); !bytes.Equal(got, body) {
		t.Error("content changed after the second Put")
	}

	// Delete, then it is gone.
	requireNoError(t, s.Delete(ctx, name))
	_, err = s.Fetch(ctx, name, io.Discard, FetchOptions{})
	requireCode(t, err, domain.NotFound, name)
	requireCode(t, s.Delete(ctx, name), domain.NotFound, name)
	if got := objectNames(t, ctx, s, false); len(got) != 0 {
		t.Errorf("after Delete the bucket holds %v", got)
	}

	// And it can be stored again.
	_, name3, err := s.Put(ctx, "", bytes.NewReader(body), DefaultLimits())
	requireNoError(t, err)
	if got := readAll(t, ctx, s, name3); !bytes.Equal(got, body) {
		t.Error("content differs after storing a deleted package again")
	}
}

func TestStorePutRefusedLeavesNothing(t *testing.T) {
	big := bigPackage(t)
	tests := []struct {
		name string
		body []byte
		lim  Limits
		code string
		msg  string
	}{
		{"path climbing out", tgz(t, with(layout(""), file("../etc/passwd", "x"))...), DefaultLimits(),
			domain.Invalid, `package: entry "../etc/passwd"`},
		{"refused at the end of the body", tgz(t, without(layout(""), "bin/dm-worker")...), DefaultLimits(),
			domain.Invalid, "package lacks bin/dm-worker"},
		{"refused at the end of a multi-chunk body", append(slices.Clone(big), "\x1f\x8b\x08\x00 trailing"...), Limits{MaxBytes: int64(len(big)) + 3},
			domain.TooLarge, "package is larger than the upload limit"},
		{"over the compressed limit mid-upload", big, Limits{MaxBytes: 300 << 10},
			domain.TooLarge, "package is larger than the upload limit of 300 KiB"},
		{"not gzip", []byte("plain text"), DefaultLimits(),
			domain.Invalid, "package is not gzip-compressed"},
		// Archives inside the package: refused after several chunks went
		// to the store, which keeps none of them.
		{"nested archive with a path climbing out, after 1 MiB", tgz(t, with(withGrafana(grafanaWith(t, file("../x", "x"))), file("0-noise", noise(11, 1<<20)))...), DefaultLimits(),
			domain.Invalid, `package: grafana.tar.gz: entry "../x": path climbs out of the archive`},
		{"nested archive with a device deep inside", tgz(t, withGrafana(grafanaWith(t, file("public/a", noise(12, 1<<20)), ent{name: "public/tty", typ: tar.TypeChar}))...), DefaultLimits(),
			domain.Invalid, `package: grafana.tar.gz: entry "public/tty": is a character device`},
		{"nested compression bomb", tgz(t, with(withGrafana(zerosTGZ(t, "zeros", 64<<20)), file("0-noise", noise(13, 1<<20)))...), DefaultLimits(),
			domain.TooLarge, "package: grafana.tar.gz unpacks to more than 200 times its compressed size"},
		{"too many entries", tgz(t, with(layout(""), file("a", ""), file("b", ""))...), Limits{MaxEntries: 17},
			domain.TooLarge, "package has more than 17 entries"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, ctx := openStore(t)
			_, name, err := s.Put(ctx, "", bytes.NewReader(tc.body), tc.lim)
			requireCode(t, err, tc.code, tc.msg)
			if name != "" {
				t.Errorf("name = %q for a refused package", name)
			}
			requireEmptyBucket(t, ctx, s)
		})
	}
}

// failingBody returns its data in small reads, then err.
type failingBody struct {
	data []byte
	err  error
	hook func()
}

func (f *failingBody) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		if f.hook != nil {
			f.hook()
		}
		return 0, f.err
	}
	n := copy(p[:min(len(p), 32<<10)], f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestStorePutBodyFails(t *testing.T) {
	s, ctx := openStore(t)
	boom := errors.New("client went away")
	body := bigPackage(t)
	_, _, err := s.Put(ctx, "", &failingBody{data: body[:len(body)/2], err: boom}, DefaultLimits())
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want an error wrapping %v", err, boom)
	}
	requireEmptyBucket(t, ctx, s)
}

func TestStorePutCancelled(t *testing.T) {
	s, ctx := openStore(t)
	body := bigPackage(t)
	cctx, cancel := context.WithCancel(ctx)
	// Half way, the context is cancelled while the body has no error: Put
	// must stop, and the Inspect reading along must not stay blocked.
	_, _, err := s.Put(cctx, "", &failingBody{data: body[:len(body)/2], hook: cancel}, DefaultLimits())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	requireEmptyBucket(t, ctx, s)
}

func TestStoreFetchMissing(t *testing.T) {
	s, ctx := openStore(t)
	_, err := s.Fetch(ctx, "sha256/"+sha([]byte("nothing")), io.Discard, FetchOptions{})
	requireCode(t, err, domain.NotFound, "is not stored")
	requireCode(t, s.Delete(ctx, "sha256/nope"), domain.NotFound, "is not stored")
}
