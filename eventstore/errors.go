package eventstore

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrConflict means the aggregate (or the filter) moved on since the
// decision was made: reload, decide again, and append again.
var ErrConflict = errors.New("optimistic concurrency conflict")

// ErrRetryable means the append may succeed if sent again unchanged (with
// the same commit id, so that it is deduplicated).
var ErrRetryable = errors.New("temporarily unavailable")

// JetStream API error codes that decide how an append failed.
const (
	codeWrongLastSeq         = 10071 // wrong last sequence: {seq}
	codeWrongLastSeqConstant = 10164 // wrong last sequence
	codeLastSeqUnavailable   = 10163 // expected last sequence per subject temporarily unavailable
	codeDuplicateInProcess   = 10158 // duplicate message id is in process
)

// classify wraps err with ErrConflict or ErrRetryable where the JetStream
// error code or the client error says so.
func classify(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case codeWrongLastSeq, codeWrongLastSeqConstant:
			return fmt.Errorf("%w: %w", ErrConflict, err)
		case codeLastSeqUnavailable, codeDuplicateInProcess:
			return fmt.Errorf("%w: %w", ErrRetryable, err)
		}
		return err
	}
	if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrConnectionReconnecting) {
		return fmt.Errorf("%w: %w", ErrRetryable, err)
	}
	return err
}
