package eventstore

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// OpenExisting returns a store on the existing event stream without
// creating or changing it: what a client allowed only to read the stream
// (an agent, the projector) can do. Such a client reads with LoadSince and
// Load (direct get); Append and LoadFilter need the server's permissions.
// It fails when the stream does not exist yet (the server creates it when
// it starts).
func OpenExisting(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	stream, err := js.Stream(ctx, StreamName)
	if err != nil {
		return nil, fmt.Errorf("open stream %s (a dmgr server creates it when it starts): %w", StreamName, classify(err))
	}
	return &Store{js: js, stream: stream}, nil
}
