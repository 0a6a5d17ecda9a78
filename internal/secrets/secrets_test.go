package secrets

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/testenv"
)

// host is the machine the tests' credentials belong to.
const host = "10.0.0.1"

func requireNoError(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func requireCode(t *testing.T, err error, code, what string) {
	t.Helper()
	if got := domain.ErrorCode(err); got != code {
		t.Fatalf("%s: got code %q (%v), want %q", what, got, err, code)
	}
}

// runJetStream starts an in-process NATS server with JetStream and returns
// a JetStream client; both are shut down when the test ends.
func runJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	n := testenv.NATS(t)
	_, js := testenv.JetStream(t, n)
	return js
}

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	_, err := rand.Read(k)
	requireNoError(t, err, "random key")
	return k
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// rawKV opens the bucket directly, as an attacker with access to the
// JetStream store (but not the master key) would.
func rawKV(t *testing.T, ctx context.Context, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	kv, err := js.KeyValue(ctx, Bucket)
	requireNoError(t, err, "open bucket")
	return kv
}

func TestRoundTrip(t *testing.T) {
	ctx := ctxT(t)
	js := runJetStream(t)
	v, err := Open(ctx, js, newKey(t), 1)
	requireNoError(t, err, "open")

	pem := []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\x00\xff\n-----END OPENSSH PRIVATE KEY-----\n")
	cases := []struct {
		kind   Kind
		secret []byte
	}{
		{KindPassword, []byte("hunter2-correct-horse")},
		{KindPrivateKey, pem},
	}
	for _, c := range cases {
		id, err := v.Put(ctx, c.kind, c.secret, host)
		requireNoError(t, err, "put "+string(c.kind))
		if !strings.HasPrefix(id, "cred-") || checkID(id) != nil {
			t.Fatalf("id %q is not cred-<uuid>", id)
		}
		kind, got, err := v.Get(ctx, id, host)
		requireNoError(t, err, "get "+id)
		if kind != c.kind || !bytes.Equal(got, c.secret) {
			t.Fatalf("get %s: got (%q, %q), want (%q, %q)", id, kind, got, c.kind, c.secret)
		}
	}

	// Ids are UUID v7: they sort by creation time.
	a, err := v.Put(ctx, KindPassword, []byte("a"), host)
	requireNoError(t, err, "put a")
	b, err := v.Put(ctx, KindPassword, []byte("b"), host)
	requireNoError(t, err, "put b")
	if a >= b {
		t.Fatalf("ids do not increase: %s then %s", a, b)
	}

	// Same plaintext twice: different nonces, different stored bytes.
	kv := rawKV(t, ctx, js)
	id1, _ := v.Put(ctx, KindPassword, []byte("same"), host)
	id2, _ := v.Put(ctx, KindPassword, []byte("same"), host)
	e1, err := kv.Get(ctx, id1)
	requireNoError(t, err, "raw get")
	e2, err := kv.Get(ctx, id2)
	requireNoError(t, err, "raw get")
	if bytes.Equal(e1.Value()[2:headerSize], e2.Value()[2:headerSize]) { // the nonces
		t.Fatal("two secrets share a nonce")
	}

	_, err = Open(ctx, js, nil, 1)
	requireCode(t, err, domain.Invalid, "open with no key")
}

func TestReopenIdempotent(t *testing.T) {
	ctx := ctxT(t)
	js := runJetStream(t)
	key := newKey(t)
	v, err := Open(ctx, js, key, 1)
	requireNoError(t, err, "open")
	id, err := v.Put(ctx, KindPassword, []byte("pw"), host)
	requireNoError(t, err, "put")
	for i := range 2 {
		v2, err := Open(ctx, js, key, 1)
		requireNoError(t, err, fmt.Sprintf("reopen %d", i))
		_, got, err := v2.Get(ctx, id, host)
		requireNoError(t, err, "get after reopen")
		if string(got) != "pw" {
			t.Fatalf("got %q after reopen", got)
		}
	}
	st, err := rawKV(t, ctx, js).Status(ctx)
	requireNoError(t, err, "status")
	if st.History() != 1 {
		t.Fatalf("bucket history %d, want 1", st.History())
	}
	if st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Storage != jetstream.FileStorage {
		t.Fatal("bucket is not file-backed")
	}
}

func TestStoredBytesHoldNoPlaintext(t *testing.T) {
	ctx := ctxT(t)
	js := runJetStream(t)
	v, err := Open(ctx, js, newKey(t), 1)
	requireNoError(t, err, "open")
	secret := []byte("plaintext-password-0123456789")
	id, err := v.Put(ctx, KindPassword, secret, host)
	requireNoError(t, err, "put")

	e, err := rawKV(t, ctx, js).Get(ctx, id)
	requireNoError(t, err, "raw get")
	raw := e.Value()
	if bytes.Contains(raw, secret) || bytes.Contains(raw, secret[:8]) {
		t.Fatalf("stored value contains the plaintext: %q", raw)
	}
	if want := headerSize + 1 + len(host) + len(secret) + 16; len(raw) != want || raw[0] != formatV2 {
		t.Fatalf("stored value: %d bytes, version %d; want %d bytes, version %d", len(raw), raw[0], want, formatV2)
	}
}

func TestWrongMasterKey(t *testing.T) {
	ctx := ctxT(t)
	js := runJetStream(t)
	v, err := Open(ctx, js, newKey(t), 1)
	requireNoError(t, err, "open")
	id, err := v.Put(ctx, KindPrivateKey, []byte("key material"), host)
	requireNoError(t, err, "put")

	other, err := Open(ctx, js, newKey(t), 1)
	requireNoError(t, err, "open with other key")
	_, got, err := other.Get(ctx, id, host)
	if !errors.Is(err, ErrDecrypt) || got != nil {
		t.Fatalf("get with the wrong key: got (%q, %v), want ErrDecrypt", got, err)
	}
	if !strings.Contains(err.Error(), "master key") || !strings.Contains(err.Error(), id) {
		t.Fatalf("error does not name the id and the master key: %v", err)
	}
	requireCode(t, err, domain.Internal, "wrong key")
}

func TestTamperedValue(t *testing.T) {
	ctx := ctxT(t)
	js := runJetStream(t)
	v, err := Open(ctx, js, newKey(t), 1)
	requireNoError(t, err, "open")
	kv := rawKV(t, ctx, js)

	for name, mutate := range map[string]func(b []byte) []byte{
		"ciphertext": func(b []byte) []byte { b[headerSize+1+len(host)] ^= 1; return b },
		"tag":        func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b },
		"nonce":      func(b []byte) []byte { b[2] ^= 1; return b },
		"truncated":  func(b []byte) []byte { return b[:headerSize+3] },
	} {
		t.Run(name, func(t *testing.T) {
			id, err := v.Put(ctx, KindPassword, []byte("s3cret"), host)
			requireNoError(t, err, "put")
			e, err := kv.Get(ctx, id)
			requireNoError(t, err, "raw get")
			_, err = kv.Put(ctx, id, mutate(bytes.Clone(e.Value())))
			requireNoError(t, err, "raw put")
			if _, _, err := v.Get(ctx, id, host); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("get tampered value: got %v, want ErrDecrypt", err)
			}
		})
	}
}

func TestIDAndKindBound(t *testing.T) {
	ctx := ctxT(t)
	js := runJetStream(t)
	v, err := Open(ctx, js, newKey(t), 1)
	requireNoError(t, err, "open")
	kv := rawKV(t, ctx, js)

	victim, err := v.Put(ctx, KindPrivateKey, []byte("victim key"), host)
	requireNoError(t, err, "put victim")
	mine, err := v.Put(ctx, KindPrivateKey, []byte("my key"), host)
	requireNoError(t, err, "put mine")

	// Copy the victim's sealed value under my id.
	e, err := kv.Get(ctx, victim)
	requireNoError(t, err, "raw get")
	_, err = kv.Put(ctx, mine, e.Value())
	requireNoError(t, err, "raw put")
	if _, got, err := v.Get(ctx, mine, host); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("value moved to another id opened: got %q, %v", got, err)
	}

	// Relabel the victim's value as a password.
	relabelled := bytes.Clone(e.Value())
	relabelled[1] = kindCodes[KindPassword]
	_, err = kv.Put(ctx, victim, relabelled)
	requireNoError(t, err, "raw put")
	if _, got, err := v.Get(ctx, victim, host); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("value relabelled as another kind opened: got %q, %v", got, err)
	}
}

func TestNotFoundInvalidDelete(t *testing.T) {
	ctx := ctxT(t)
	js := runJetStream(t)
	v, err := Open(ctx, js, newKey(t), 1)
	requireNoError(t, err, "open")

	_, _, err = v.Get(ctx, "cred-0191e0c4-0c7d-7000-8000-000000000000", host)
	requireCode(t, err, domain.NotFound, "get unknown id")
	for _, bad := range []string{"", "cred-", "cred-xyz", "0191e0c4-0c7d-7000-8000-000000000000", "cred-0191e0c4-0c7d-7000-8000-000000000000.>", "cred-{0191e0c4-0c7d-7000-8000-000000000000}"} {
		_, _, err = v.Get(ctx, bad, host)
		requireCode(t, err, domain.Invalid, fmt.Sprintf("get %q", bad))
	}

	_, err = v.Put(ctx, "ssh_agent", []byte("x"), host)
	requireCode(t, err, domain.Invalid, "put unknown kind")
	_, err = v.Put(ctx, KindPassword, nil, host)
	requireCode(t, err, domain.Invalid, "put empty secret")
	_, err = v.Put(ctx, KindPrivateKey, make([]byte, MaxSecretSize+1), host)
	requireCode(t, err, domain.Invalid, "put huge secret")

	id, err := v.Put(ctx, KindPassword, []byte("pw"), host)
	requireNoError(t, err, "put")
	requireNoError(t, v.Delete(ctx, id), "delete")
	requireNoError(t, v.Delete(ctx, id), "delete again")
	_, _, err = v.Get(ctx, id, host)
	requireCode(t, err, domain.NotFound, "get deleted")
	// A purge leaves only its marker; no sealed revision remains.
	hist, err := rawKV(t, ctx, js).History(ctx, id)
	requireNoError(t, err, "history")
	if len(hist) != 1 || hist[0].Operation() != jetstream.KeyValuePurge || len(hist[0].Value()) != 0 {
		t.Fatalf("history after delete: %d entries, first %v; want only a purge marker", len(hist), hist[0].Operation())
	}
}

func TestNoLeakThroughFmt(t *testing.T) {
	ctx := ctxT(t)
	js := runJetStream(t)
	key := newKey(t)
	v, err := Open(ctx, js, key, 1)
	requireNoError(t, err, "open")
	for _, s := range []string{fmt.Sprint(v), fmt.Sprintf("%v %+v %#v %s", v, v, v, v), fmt.Sprintf("%v", *v)} {
		if strings.Contains(s, "aead") || strings.Contains(s, "0x") || bytes.Contains([]byte(s), key[:4]) {
			t.Fatalf("fmt shows vault internals: %s", s)
		}
	}
}

func TestLoadMasterKey(t *testing.T) {
	key := newKey(t)
	enc := base64.StdEncoding.EncodeToString(key)
	got, err := LoadMasterKey("  " + enc + "\n")
	requireNoError(t, err, "valid key")
	if !bytes.Equal(got, key) {
		t.Fatal("decoded key differs")
	}
	for _, c := range []struct{ in, want string }{
		{"", "empty"},
		{"not base64!!", "not valid base64"},
		{base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)), "not valid base64"},
		{base64.StdEncoding.EncodeToString(make([]byte, 16)), "is 16 bytes after base64 decoding; it must be exactly 32"},
		{base64.StdEncoding.EncodeToString(make([]byte, 33)), "is 33 bytes"},
	} {
		_, err := LoadMasterKey(c.in)
		requireCode(t, err, domain.Invalid, fmt.Sprintf("LoadMasterKey(%q)", c.in))
		if msg := domain.ErrorMessage(err); !strings.Contains(msg, c.want) || !strings.Contains(msg, "/dev/urandom") {
			t.Fatalf("LoadMasterKey(%q): message %q, want it to contain %q and how to generate a key", c.in, msg, c.want)
		}
		if c.in != "" && strings.Contains(err.Error(), c.in) {
			t.Fatalf("error repeats the key: %v", err)
		}
	}
}

func TestMasterKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev", "master.key")
	k1, err := LoadOrCreateMasterKeyFile(path)
	requireNoError(t, err, "create")
	if len(k1) != KeySize {
		t.Fatalf("key is %d bytes", len(k1))
	}
	fi, err := os.Stat(path)
	requireNoError(t, err, "stat")
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	k2, err := LoadOrCreateMasterKeyFile(path)
	requireNoError(t, err, "reuse")
	if !bytes.Equal(k1, k2) {
		t.Fatal("second call made a new key")
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("temporary files left beside the key: %v", ents)
	}

	for _, mode := range []os.FileMode{0o640, 0o604, 0o620} {
		requireNoError(t, os.Chmod(path, mode), "chmod")
		_, err = LoadOrCreateMasterKeyFile(path)
		requireCode(t, err, domain.Invalid, fmt.Sprintf("mode %04o", mode))
		if msg := domain.ErrorMessage(err); !strings.Contains(msg, "chmod 600 "+path) {
			t.Fatalf("mode %04o: message %q does not say how to fix it", mode, msg)
		}
	}

	requireNoError(t, os.Chmod(path, 0o600), "chmod 600")
	requireNoError(t, os.WriteFile(path, []byte("c2hvcnQ=\n"), 0o600), "write short key")
	_, err = LoadOrCreateMasterKeyFile(path)
	requireCode(t, err, domain.Invalid, "short key in file")
	if msg := domain.ErrorMessage(err); !strings.Contains(msg, path) || !strings.Contains(msg, "exactly 32") {
		t.Fatalf("short key file: message %q", msg)
	}
}

// A credential opens only for the machine it was stored for: a credential
// id of machine A never decrypts for machine B, whatever is done to the
// stored value.
func TestCredentialBoundToItsMachine(t *testing.T) {
	ctx := ctxT(t)
	js := runJetStream(t)
	v, err := Open(ctx, js, newKey(t), 1)
	requireNoError(t, err, "open")
	kv := rawKV(t, ctx, js)
	const hostA, hostB = "10.0.0.1", "10.0.0.2"

	id, err := v.Put(ctx, KindPassword, []byte("secret of A"), hostA)
	requireNoError(t, err, "put for A")
	kind, got, err := v.Get(ctx, id, hostA)
	requireNoError(t, err, "get for A")
	if kind != KindPassword || string(got) != "secret of A" {
		t.Fatalf("get for A: (%q, %q)", kind, got)
	}

	kind, got, err = v.Get(ctx, id, hostB)
	requireCode(t, err, domain.Forbidden, "get A's credential for B")
	if got != nil || kind != "" {
		t.Fatalf("get for B returned (%q, %q)", kind, got)
	}
	if msg := err.Error(); !strings.Contains(msg, "belongs to machine "+hostA+", not "+hostB) || strings.Contains(msg, "secret of A") {
		t.Fatalf("message %q does not say whose the credential is (or shows the secret)", msg)
	}

	// The owner is kept in clear; rewriting it to B does not make the value
	// open for B: the owner is authenticated.
	e, err := kv.Get(ctx, id)
	requireNoError(t, err, "raw get")
	raw := e.Value()
	if n := int(raw[headerSize]); n != len(hostA) || string(raw[headerSize+1:headerSize+1+n]) != hostA {
		t.Fatalf("stored owner %q, want %q", raw[headerSize+1:headerSize+1+n], hostA)
	}
	forged := bytes.Clone(raw)
	copy(forged[headerSize+1:], hostB)
	_, err = kv.Put(ctx, id, forged)
	requireNoError(t, err, "raw put")
	if _, got, err := v.Get(ctx, id, hostB); !errors.Is(err, ErrDecrypt) || got != nil {
		t.Fatalf("value re-owned to B opened for B: (%q, %v)", got, err)
	}
	// A longer owner, length byte and all.
	longer := slices.Concat(raw[:headerSize], []byte{byte(len(hostB + "0"))}, []byte(hostB+"0"), raw[headerSize+1+len(hostA):])
	_, err = kv.Put(ctx, id, longer)
	requireNoError(t, err, "raw put")
	if _, got, err := v.Get(ctx, id, hostB+"0"); !errors.Is(err, ErrDecrypt) || got != nil {
		t.Fatalf("value re-owned to %s opened: (%q, %v)", hostB+"0", got, err)
	}

	for _, bad := range []string{"", strings.Repeat("h", MaxOwnerSize+1), "10.0.0.1 ", "a\x00b", "h\n"} {
		_, err := v.Put(ctx, KindPassword, []byte("x"), bad)
		requireCode(t, err, domain.Invalid, fmt.Sprintf("put for owner %q", bad))
		_, _, err = v.Get(ctx, id, bad)
		requireCode(t, err, domain.Invalid, fmt.Sprintf("get for owner %q", bad))
	}
}

// A credential stored by an older dmgr (format 1, bound to no machine) is
// refused with what to do.
func TestFormat1CredentialIsRefused(t *testing.T) {
	ctx := ctxT(t)
	js := runJetStream(t)
	key := newKey(t)
	v, err := Open(ctx, js, key, 1)
	requireNoError(t, err, "open")
	id := "cred-0191e0c4-0c7d-7000-8000-000000000001"
	// Sealed as format 1 was: version | kind | nonce | ciphertext, with
	// version | id | 0 | kind as additional data.
	nonce := make([]byte, nonceSize)
	_, err = rand.Read(nonce)
	requireNoError(t, err, "nonce")
	ad := append(append(append([]byte{formatV1}, id...), 0), KindPassword...)
	value := append([]byte{formatV1, kindCodes[KindPassword]}, nonce...)
	value = v.aead.Seal(value, nonce, []byte("old secret"), ad)
	_, err = rawKV(t, ctx, js).Put(ctx, id, value)
	requireNoError(t, err, "raw put")

	kind, got, err := v.Get(ctx, id, host)
	if !errors.Is(err, ErrUnbound) || got != nil || kind != "" {
		t.Fatalf("format 1 credential: (%q, %q, %v), want ErrUnbound", kind, got, err)
	}
	requireCode(t, err, domain.Conflict, "format 1")
	if msg := domain.ErrorMessage(err); !strings.Contains(msg, "register the machine again") || !strings.Contains(msg, host) {
		t.Fatalf("message %q does not say to register machine %s again", msg, host)
	}

	// Bind seals it again for its machine: it opens for that one only.
	requireNoError(t, v.Bind(ctx, id, host), "bind")
	kind, got, err = v.Get(ctx, id, host)
	if err != nil || kind != KindPassword || string(got) != "old secret" {
		t.Fatalf("after bind: (%q, %q, %v)", kind, got, err)
	}
	_, _, err = v.Get(ctx, id, "10.0.0.9")
	requireCode(t, err, domain.Forbidden, "get a bound credential for another machine")
	requireNoError(t, v.Bind(ctx, id, host), "bind again to the same machine")
	requireCode(t, v.Bind(ctx, id, "10.0.0.9"), domain.Forbidden, "bind to another machine")
	e, err := rawKV(t, ctx, js).Get(ctx, id)
	requireNoError(t, err, "raw get")
	if e.Value()[0] != formatV2 {
		t.Fatalf("bound value is format %d", e.Value()[0])
	}
	requireCode(t, v.Bind(ctx, "cred-0191e0c4-0c7d-7000-8000-000000000002", host), domain.NotFound, "bind unknown")
}

// OpenExisting binds the bucket and creates nothing: before a server made
// it, it fails; after, it reads what the server stored.
func TestOpenExistingCreatesNothing(t *testing.T) {
	ctx := ctxT(t)
	js := runJetStream(t)
	key := newKey(t)
	_, err := OpenExisting(ctx, js, key)
	requireCode(t, err, domain.Unavailable, "open a missing bucket")
	if _, err := js.KeyValue(ctx, Bucket); err == nil {
		t.Fatal("OpenExisting created the bucket")
	}
	_, err = OpenExisting(ctx, js, key[:16])
	requireCode(t, err, domain.Invalid, "short key")

	server, err := Open(ctx, js, key, 1)
	requireNoError(t, err, "open")
	id, err := server.Put(ctx, KindPassword, []byte("pw"), host)
	requireNoError(t, err, "put")
	agent, err := OpenExisting(ctx, js, key)
	requireNoError(t, err, "open existing")
	if _, got, err := agent.Get(ctx, id, host); err != nil || string(got) != "pw" {
		t.Fatalf("get through OpenExisting: %q %v", got, err)
	}
}
