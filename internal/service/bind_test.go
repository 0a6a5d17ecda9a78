package service_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/testenv"
)

// sealV1 seals secret as a dmgr older than the binding of credentials to
// their machine stored it (vault format 1: version | kind | nonce |
// ciphertext, with version | id | 0 | kind as additional data), under the
// fixture's master key.
func sealV1(t *testing.T, id string, secret []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(bytes.Repeat([]byte{1}, secrets.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	ad := append(append(append([]byte{1}, id...), 0), secrets.KindPassword...)
	return aead.Seal(append([]byte{1, 1}, nonce...), nonce, secret, ad)
}

// A server starting over credentials that an older dmgr stored unbound
// binds each to its registered machine: agents can open it for that
// machine, and for no other. Bound ones are left as they are.
func TestBindCredentialsBindsOldCredentialsToTheirMachine(t *testing.T) {
	f := newService(t)
	ctx := testenv.Context(t, time.Minute)
	m, err := f.svc.Machine(ctx, "198.18.0.11")
	if err != nil {
		t.Fatal(err)
	}
	kv, err := f.js.KeyValue(ctx, secrets.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, m.Credential.ID, sealV1(t, m.Credential.ID, []byte("old password"))); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.vault.Get(ctx, m.Credential.ID, m.Host); !errors.Is(err, secrets.ErrUnbound) {
		t.Fatalf("before: %v, want ErrUnbound", err)
	}

	n, err := f.svc.BindCredentials(ctx)
	if err != nil || n != 2 {
		t.Fatalf("BindCredentials = %d, %v; want both machines checked", n, err)
	}
	kind, secret, err := f.vault.Get(ctx, m.Credential.ID, m.Host)
	if err != nil || kind != secrets.KindPassword || string(secret) != "old password" {
		t.Fatalf("after: %q %q %v", kind, secret, err)
	}
	if _, _, err := f.vault.Get(ctx, m.Credential.ID, "198.18.0.12"); err == nil {
		t.Fatal("the bound credential opens for another machine")
	}
	other, err := f.svc.Machine(ctx, "198.18.0.12")
	if err != nil {
		t.Fatal(err)
	}
	if _, secret, err := f.vault.Get(ctx, other.Credential.ID, other.Host); err != nil || string(secret) != "pw" {
		t.Fatalf("the credential bound already: %q %v", secret, err)
	}
	// Again: nothing to do, nothing fails.
	if _, err := f.svc.BindCredentials(ctx); err != nil {
		t.Fatalf("second BindCredentials: %v", err)
	}
}
