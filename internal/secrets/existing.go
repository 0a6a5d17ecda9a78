package secrets

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/domain"
)

// OpenExisting returns a vault on the existing bucket "dmgr-secrets",
// without creating or changing it: what a client allowed only to read the
// bucket (an agent) can do. It fails when the bucket does not exist yet
// (the server creates it when it starts).
func OpenExisting(ctx context.Context, js jetstream.JetStream, key []byte) (*Vault, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		return nil, domain.Errorf(domain.Unavailable, "secrets: open key-value bucket %s (a dmgr server creates it when it starts): %v", Bucket, err)
	}
	return &Vault{kv: kv, aead: aead}, nil
}

// newAEAD is AES-256-GCM under the 32-byte master key.
func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, domain.Errorf(domain.Invalid, "master key is %d bytes; it must be exactly %d (AES-256)", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secrets: aes: %w", err)
	}
	aead, err := cipher.NewGCMWithNonceSize(block, nonceSize)
	if err != nil {
		return nil, fmt.Errorf("secrets: gcm: %w", err)
	}
	return aead, nil
}
