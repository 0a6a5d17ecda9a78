package eventstore

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// Reader reads the event store and nothing else: it creates no stream and
// no consumer, and cannot append. It is what agents use, whose bus
// permission on the event stream is `$JS.API.DIRECT.GET.DMGR_EVENTS` only.
type Reader struct {
	s *Store
}

// NewReader binds a reader to the existing event stream through js. It
// sends nothing: the stream is reached (and its absence reported) by the
// first read.
func NewReader(js jetstream.JetStream) *Reader {
	return &Reader{s: &Store{js: js}}
}

// LoadSince is Store.LoadSince: the commits of one aggregate after stream
// sequence after, by direct get.
func (r *Reader) LoadSince(ctx context.Context, aggregateType, id string, after uint64) (Stream, error) {
	return r.s.LoadSince(ctx, aggregateType, id, after)
}
