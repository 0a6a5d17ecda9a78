package eventstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// directBatch is how many commits one direct-get request asks for.
const directBatch = 256

// defaultReadTimeout bounds a read whose context has no deadline.
const defaultReadTimeout = 30 * time.Second

// directGetRequest is the body of a JetStream direct-get request
// (nats-server ≥ 2.11 answers a batch: the messages, then a 204 EOB).
type directGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	Batch   int    `json:"batch,omitempty"`
}

// LoadSince reads the commits of one aggregate whose stream sequence is
// greater than after, in order: what a holder of an aggregate's state
// folded up to after needs to bring it up to date. Its LastSeq is the
// sequence of the last commit read (after itself when there was none), the
// value to pass as Expect.LastSeq.
//
// It reads by direct get only (`$JS.API.DIRECT.GET.DMGR_EVENTS`): no
// consumer is created, so a client allowed just that subject (an agent)
// can read the store and change nothing in it. Its cost is the number of
// commits read, not the size of the stream.
func (s *Store) LoadSince(ctx context.Context, aggregateType, id string, after uint64) (Stream, error) {
	subject := Subject(aggregateType, id)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultReadTimeout)
		defer cancel()
	}
	nc := s.js.Conn()
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return Stream{}, fmt.Errorf("load %s: subscribe: %w", subject, classify(err))
	}
	defer func() { _ = sub.Unsubscribe() }()

	out := Stream{LastSeq: after}
	// First the subject's last commit, found through the server's subject
	// index whatever the stream's size: when it is the one the caller has,
	// there is nothing to read. (Asking for the next commit after it would
	// make the server look through every later block of the stream.)
	last, err := s.lastOnSubject(ctx, nc, sub, inbox, subject)
	if err != nil || last <= after {
		return out, err
	}
	for {
		req, err := json.Marshal(directGetRequest{Seq: out.LastSeq + 1, NextFor: subject, Batch: directBatch})
		if err != nil {
			return Stream{}, fmt.Errorf("load %s: %w", subject, err)
		}
		if err := nc.PublishRequest(s.directGetSubject(), inbox, req); err != nil {
			return Stream{}, fmt.Errorf("load %s: %w", subject, classify(err))
		}
		more, err := readBatch(ctx, sub, subject, &out)
		if err != nil {
			return Stream{}, err
		}
		if !more {
			return out, nil
		}
	}
}

// lastOnSubject is the stream sequence of the last commit on subject (0:
// none), by one direct get answered on sub.
func (s *Store) lastOnSubject(ctx context.Context, nc *nats.Conn, sub *nats.Subscription, inbox, subject string) (uint64, error) {
	req, err := json.Marshal(directGetRequest{LastFor: subject})
	if err != nil {
		return 0, fmt.Errorf("load %s: %w", subject, err)
	}
	if err := nc.PublishRequest(s.directGetSubject(), inbox, req); err != nil {
		return 0, fmt.Errorf("load %s: %w", subject, classify(err))
	}
	m, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return 0, fmt.Errorf("load %s: last commit: %w", subject, classify(err))
	}
	switch status := m.Header.Get("Status"); status {
	case "":
	case "404":
		return 0, nil
	default:
		return 0, fmt.Errorf("load %s: last commit: direct get answered %s %s", subject, status, m.Header.Get("Description"))
	}
	seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("load %s: direct get answered sequence %q", subject, m.Header.Get("Nats-Sequence"))
	}
	return seq, nil
}

// readBatch reads one direct-get answer into out; more reports whether
// commits beyond the batch are waiting.
func readBatch(ctx context.Context, sub *nats.Subscription, subject string, out *Stream) (more bool, err error) {
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return false, fmt.Errorf("load %s after seq %d: %w", subject, out.LastSeq, classify(err))
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "404": // nothing after out.LastSeq
			return false, nil
		case "204": // end of batch
			pending, err := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
			if err != nil {
				return false, fmt.Errorf("load %s: direct get answered an end of batch without a pending count", subject)
			}
			return pending > 0, nil
		default:
			return false, fmt.Errorf("load %s after seq %d: direct get answered %s %s", subject, out.LastSeq,
				status, m.Header.Get("Description"))
		}
		if got := m.Header.Get("Nats-Subject"); got != subject {
			return false, fmt.Errorf("load %s: direct get answered a message of %q", subject, got)
		}
		seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		if err != nil || seq <= out.LastSeq {
			return false, fmt.Errorf("load %s: direct get answered sequence %q after %d", subject, m.Header.Get("Nats-Sequence"), out.LastSeq)
		}
		evs, err := DecodeCommit(seq, m.Data)
		if err != nil {
			return false, fmt.Errorf("load %s: %w", subject, err)
		}
		out.Events = append(out.Events, evs...)
		out.LastSeq = seq
	}
}

// directGetSubject is the direct-get subject of the event stream under the
// client's JetStream API prefix.
func (s *Store) directGetSubject() string {
	prefix := s.js.Options().APIPrefix
	if prefix == "" {
		prefix = jetstream.DefaultAPIPrefix
	}
	if !strings.HasSuffix(prefix, ".") {
		prefix += "."
	}
	return prefix + "DIRECT.GET." + StreamName
}
