package secrets

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/domain"
)

// Bucket is the JetStream key-value bucket that holds the sealed secrets,
// one key per credential id.
const Bucket = "dmgr-secrets"

// MaxSecretSize bounds one secret; SSH private keys are a few KiB.
const MaxSecretSize = 64 << 10

// Kind says what a credential is.
type Kind string

// The kinds of credential.
const (
	KindPassword   Kind = "password"
	KindPrivateKey Kind = "private_key"
	// KindPasswordHash is a user's password hash (argon2id, PHC string),
	// kept in the passwords bucket (OpenPasswords), never in the machines'.
	KindPasswordHash Kind = "password_hash"
)

// kindCodes is the on-disk code of each kind; codes are never reused.
var kindCodes = map[Kind]byte{KindPassword: 1, KindPrivateKey: 2, KindPasswordHash: 3}

func kindOf(code byte) (Kind, bool) {
	for k, c := range kindCodes {
		if c == code {
			return k, true
		}
	}
	return "", false
}

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool { _, ok := kindCodes[k]; return ok }

// ErrDecrypt is returned, wrapped, by Get when a stored value does not open:
// the vault's master key is not the one it was sealed with, or the value was
// altered or moved to another id, kind or owner. It has code Internal: it is a
// server fault, logged, and not shown to API clients.
var ErrDecrypt = errors.New("cannot decrypt: the master key differs from the one the credential was stored with, or the stored value was altered")

// Layout of a stored value, format version 2:
//
//	version (1 byte) | kind code (1 byte) | nonce (12 bytes) |
//	owner length (1 byte) | owner | AES-256-GCM ciphertext and 16-byte tag
//
// The kind and the owner are kept in clear so that Get can rebuild the
// additional data before it decrypts, and say whose a credential is; the
// additional data, version | id | 0x00 | kind | 0x00 | owner, binds the
// ciphertext to its id, its kind and its owner. The owner is the machine
// (its host, the machine's aggregate id) the credential logs in to: Get
// opens a value only for that machine, so a credential id named for
// another machine never decrypts.
//
// Format 1 (version | kind | nonce | ciphertext, additional data without
// an owner) is no longer opened: its credentials name no machine. Get
// refuses them with ErrUnbound; Bind seals one again for its machine (a
// server does so for every registered machine when it starts).
const (
	formatV1   = 1
	formatV2   = 2
	nonceSize  = 12
	headerSize = 2 + nonceSize // before the owner
	// MaxOwnerSize bounds an owner (a host name is at most 253 bytes).
	MaxOwnerSize = 255
)

// ErrUnbound is returned, wrapped, by Get for a credential stored by a
// dmgr older than the binding of credentials to their machine (format 1).
// Bind turns it into a credential of its machine.
var ErrUnbound = errors.New("credential is bound to no machine (stored by an older dmgr)")

// Vault stores and retrieves encrypted credentials.
type Vault struct {
	kv   jetstream.KeyValue
	aead cipher.AEAD
}

// String keeps the cipher state (the expanded key) out of fmt output.
func (v Vault) String() string { return "secrets.Vault{bucket: " + Bucket + "}" }

// GoString is String, for %#v.
func (v Vault) GoString() string { return v.String() }

// Open returns a vault on the KV bucket "dmgr-secrets" (file storage,
// history 1, the given number of replicas), creating the bucket when it does
// not exist. key is the 32-byte master key.
func Open(ctx context.Context, js jetstream.JetStream, key []byte, replicas int) (*Vault, error) {
	return openBucket(ctx, js, key, replicas, Bucket, "dmgr credentials, AES-256-GCM sealed; see package secrets")
}

// PasswordsBucket holds the users' password hashes, sealed like the
// machines' credentials. It is a bucket of its own so that agents, which
// may read the machines' credentials, have no permission to read it.
const PasswordsBucket = "dmgr-passwords"

// OpenPasswords returns a vault on the bucket PasswordsBucket, creating
// it when it does not exist. Owners are "user:<name>".
func OpenPasswords(ctx context.Context, js jetstream.JetStream, key []byte, replicas int) (*Vault, error) {
	return openBucket(ctx, js, key, replicas, PasswordsBucket, "dmgr users' password hashes (argon2id), AES-256-GCM sealed; see package secrets")
}

func openBucket(ctx context.Context, js jetstream.JetStream, key []byte, replicas int, bucket, description string) (*Vault, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	if replicas < 1 {
		replicas = 1
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: description,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		// Created before with another config (e.g. other replicas): use it
		// as it is rather than change it behind the operator's back.
		kv, err = js.KeyValue(ctx, bucket)
	}
	if err != nil {
		return nil, domain.Errorf(domain.Unavailable, "secrets: open key-value bucket %s: %v", bucket, err)
	}
	return &Vault{kv: kv, aead: aead}, nil
}

// Put seals secret for the machine owner (its host, as the machine is
// registered) and stores it under a new id, "cred-" followed by a UUID v7,
// which it returns. Only Get with the same owner opens it.
func (v *Vault) Put(ctx context.Context, kind Kind, secret []byte, owner string) (string, error) {
	if !kind.Valid() {
		return "", domain.Errorf(domain.Invalid, "credential kind %q is not one of %q, %q, %q", kind, KindPassword, KindPrivateKey, KindPasswordHash)
	}
	if len(secret) == 0 {
		return "", domain.Errorf(domain.Invalid, "the %s is empty", kindLabel(kind))
	}
	if len(secret) > MaxSecretSize {
		return "", domain.Errorf(domain.Invalid, "the %s is %d bytes; at most %d are accepted", kindLabel(kind), len(secret), MaxSecretSize)
	}
	if err := checkOwner(owner); err != nil {
		return "", err
	}
	u, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("secrets: new credential id: %w", err)
	}
	id := idPrefix + u.String()
	value, err := v.seal(id, kind, secret, owner)
	if err != nil {
		return "", err
	}
	if _, err := v.kv.Create(ctx, id, value); err != nil {
		return "", domain.Errorf(domain.Unavailable, "store credential %s: %v", id, err)
	}
	return id, nil
}

// Get returns the kind and plaintext of credential id, which must belong
// to machine owner. An unknown id gives a NotFound error; a credential of
// another machine a Forbidden one; one stored without an owner (format 1)
// ErrUnbound; a value that does not decrypt ErrDecrypt.
func (v *Vault) Get(ctx context.Context, id, owner string) (Kind, []byte, error) {
	if err := checkID(id); err != nil {
		return "", nil, err
	}
	if err := checkOwner(owner); err != nil {
		return "", nil, err
	}
	e, err := v.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil, domain.Errorf(domain.NotFound, "credential %s does not exist", id)
	}
	if err != nil {
		return "", nil, domain.Errorf(domain.Unavailable, "read credential %s: %v", id, err)
	}
	return v.open(id, owner, e.Value())
}

// Bind binds credential id, stored by an older dmgr bound to no machine
// (format 1), to machine owner: it is sealed again, in format 2, for owner.
// A credential bound to owner already is left as it is; one bound to
// another machine is refused (Forbidden). A server may bind the
// credential of each registered machine, as the machine's committed
// registration names it, once when it starts.
func (v *Vault) Bind(ctx context.Context, id, owner string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := checkOwner(owner); err != nil {
		return err
	}
	e, err := v.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return domain.Errorf(domain.NotFound, "credential %s does not exist", id)
	}
	if err != nil {
		return domain.Errorf(domain.Unavailable, "read credential %s: %v", id, err)
	}
	value := e.Value()
	if len(value) == 0 || value[0] != formatV1 {
		_, secret, err := v.open(id, owner, value)
		clear(secret)
		return err
	}
	if len(value) < headerSize+v.aead.Overhead() {
		return fmt.Errorf("credential %s: stored value is %d bytes, too short: %w", id, len(value), ErrDecrypt)
	}
	kind, ok := kindOf(value[1])
	if !ok {
		return fmt.Errorf("credential %s: unknown kind code %d: %w", id, value[1], ErrDecrypt)
	}
	ad := append(append(append([]byte{formatV1}, id...), 0), kind...)
	secret, err := v.aead.Open(nil, value[2:headerSize], value[headerSize:], ad)
	if err != nil {
		return fmt.Errorf("credential %s: %w", id, ErrDecrypt)
	}
	defer clear(secret)
	sealed, err := v.seal(id, kind, secret, owner)
	if err != nil {
		return err
	}
	// Only over the value read: a concurrent Bind of the same id wins once.
	if _, err := v.kv.Update(ctx, id, sealed, e.Revision()); err != nil {
		return domain.Errorf(domain.Conflict, "bind credential %s to %s: it changed meanwhile (%v); bind it again", id, owner, err)
	}
	return nil
}

// Delete removes credential id, keeping no earlier revision. Deleting an id
// that does not exist is not an error, so handlers may repeat it.
func (v *Vault) Delete(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := v.kv.Purge(ctx, id); err != nil {
		return domain.Errorf(domain.Unavailable, "delete credential %s: %v", id, err)
	}
	return nil
}

func (v *Vault) seal(id string, kind Kind, secret []byte, owner string) ([]byte, error) {
	out := make([]byte, headerSize, headerSize+1+len(owner)+len(secret)+v.aead.Overhead())
	out[0] = formatV2
	out[1] = kindCodes[kind]
	nonce := out[2:headerSize]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("secrets: nonce: %w", err)
	}
	out = append(out, byte(len(owner)))
	out = append(out, owner...)
	return v.aead.Seal(out, nonce, secret, additionalData(formatV2, id, kind, owner)), nil
}

func (v *Vault) open(id, owner string, value []byte) (Kind, []byte, error) {
	if len(value) > 0 && value[0] == formatV1 {
		return "", nil, unboundError{domain.Errorf(domain.Conflict, "credential %s of machine %s was stored by an older dmgr, bound to no machine, "+
			"and is not used any more: register the machine again (DELETE /api/v1/machines/%s, then POST /api/v1/machines with its credential) "+
			"to store it bound to the machine", id, owner, owner)}
	}
	if len(value) < headerSize+1+v.aead.Overhead() {
		return "", nil, fmt.Errorf("credential %s: stored value is %d bytes, too short: %w", id, len(value), ErrDecrypt)
	}
	if value[0] != formatV2 {
		return "", nil, fmt.Errorf("credential %s is stored in format version %d, which this dmgr cannot read; upgrade dmgr", id, value[0])
	}
	kind, ok := kindOf(value[1])
	if !ok {
		return "", nil, fmt.Errorf("credential %s: unknown kind code %d: %w", id, value[1], ErrDecrypt)
	}
	n := int(value[headerSize])
	body := value[headerSize+1:]
	if len(body) < n+v.aead.Overhead() {
		return "", nil, fmt.Errorf("credential %s: stored value is %d bytes, too short for its owner: %w", id, len(value), ErrDecrypt)
	}
	// The owner is compared before anything is decrypted: a credential of
	// another machine is never opened. (An owner altered in the store does
	// not help either: it is part of the additional data.)
	if stored := string(body[:n]); stored != owner {
		return "", nil, domain.Errorf(domain.Forbidden, "credential %s belongs to machine %s, not %s: a credential is used for its own machine only",
			id, stored, owner)
	}
	plain, err := v.aead.Open(nil, value[2:headerSize], body[n:], additionalData(formatV2, id, kind, owner))
	if err != nil {
		return "", nil, fmt.Errorf("credential %s: %w", id, ErrDecrypt)
	}
	return kind, plain, nil
}

// unboundError is a format 1 credential: a Conflict that is ErrUnbound.
type unboundError struct{ err *domain.Error }

func (e unboundError) Error() string   { return e.err.Error() }
func (e unboundError) Unwrap() []error { return []error{e.err, ErrUnbound} }

func additionalData(version byte, id string, kind Kind, owner string) []byte {
	ad := make([]byte, 0, 1+len(id)+1+len(kind)+1+len(owner))
	ad = append(ad, version)
	ad = append(ad, id...)
	ad = append(ad, 0)
	ad = append(ad, kind...)
	ad = append(ad, 0)
	return append(ad, owner...)
}

// checkOwner accepts a machine's host: 1 to MaxOwnerSize bytes of printable
// ASCII without spaces.
func checkOwner(owner string) error {
	if owner == "" || len(owner) > MaxOwnerSize {
		return domain.Errorf(domain.Invalid, "credential owner %q is not a machine's host (1 to %d characters)", owner, MaxOwnerSize)
	}
	for i := 0; i < len(owner); i++ {
		if c := owner[i]; c <= ' ' || c > '~' {
			return domain.Errorf(domain.Invalid, "credential owner %q is not a machine's host: it has a space or control character", owner)
		}
	}
	return nil
}

const idPrefix = "cred-"

// checkID accepts only "cred-" and a UUID in canonical form.
func checkID(id string) error {
	rest, ok := strings.CutPrefix(id, idPrefix)
	if u, err := uuid.Parse(rest); !ok || err != nil || u.String() != rest {
		return domain.Errorf(domain.Invalid, "credential id %q is not of the form cred-<uuid>", id)
	}
	return nil
}

func kindLabel(k Kind) string {
	if k == KindPrivateKey {
		return "private key"
	}
	return string(k)
}
