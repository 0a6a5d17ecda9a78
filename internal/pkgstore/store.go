package pkgstore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/domain"
)

// Bucket is the JetStream object store bucket that holds the packages.
const Bucket = "dmgr-packages"

const (
	// objectPrefix names a stored package by the SHA-256 of its body.
	objectPrefix = "sha256/"
	// uploadPrefix names an upload that has not passed Inspect yet.
	uploadPrefix = "upload/"
)

// Store keeps packages in the object store bucket Bucket, each under
// "sha256/<hex of the package>".
type Store struct {
	js  jetstream.JetStream
	obs jetstream.ObjectStore

	fetches, resumes, fetchedBytes atomic.Int64 // Stats
}

// Open creates the bucket (file storage, the given number of replicas; less
// than 1 means 1) or binds to it when it exists. It is safe to call from
// several servers at once. A bucket that exists with another configuration,
// such as another replica count, is used as it is.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	if replicas < 1 {
		replicas = 1
	}
	obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      Bucket,
		Description: "dmgr offline DM packages, named sha256/<hex>",
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		obs, err = js.ObjectStore(ctx, Bucket)
	}
	if err != nil {
		return nil, storeError("open package store "+Bucket, err)
	}
	return &Store{js: js, obs: obs}, nil
}

// Delete removes the stored package name. A name that is not stored gives
// domain.NotFound, so a handler that runs twice can treat that as done.
func (s *Store) Delete(ctx context.Context, name string) error {
	if name == "" {
		return domain.Errorf(domain.Invalid, "package object name is empty")
	}
	if _, err := s.obs.GetInfo(ctx, name); err != nil {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return domain.Errorf(domain.NotFound, "package %q is not stored", name)
		}
		return storeError("delete package "+name, err)
	}
	if err := s.obs.Delete(ctx, name); err != nil {
		return storeError("delete package "+name, err)
	}
	return nil
}

// storeError wraps an object store error with what was being done, and gives
// it the code domain.Unavailable when JetStream could not be reached or did
// not answer, so that the client is told to retry.
func storeError(op string, err error) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &apiErr) && apiErr.Code == 503:
		return fmt.Errorf("%s: %w: %w", op,
			domain.Errorf(domain.Unavailable, "the package store (NATS JetStream) is unavailable; retry later"), err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
