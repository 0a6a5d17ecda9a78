package pkgstore

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// OpenExisting binds to the existing bucket without creating or changing
// it: what a client allowed only to read packages (an agent) can do. It
// fails when the bucket does not exist yet (the server creates it when it
// starts).
func OpenExisting(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	obs, err := js.ObjectStore(ctx, Bucket)
	if err != nil {
		return nil, storeError("open package store "+Bucket+" (a dmgr server creates it when it starts)", err)
	}
	return &Store{js: js, obs: obs}, nil
}
