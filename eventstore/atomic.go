package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of a JetStream atomic batch publish (nats-server ≥ 2.12) and of
// the conditions each of its messages carries.
const (
	headerBatchID           = "Nats-Batch-Id"
	headerBatchSeq          = "Nats-Batch-Sequence"
	headerBatchCommit       = "Nats-Batch-Commit"
	headerExpectedStream    = "Nats-Expected-Stream"
	headerExpectedSubjSeq   = "Nats-Expected-Last-Subject-Sequence"
	headerExpectedSubjSeqOn = "Nats-Expected-Last-Subject-Sequence-Subject"
)

// MaxAtomicCommits is the most commits one AppendAtomic takes (the
// server's default largest atomic batch is 1,000 messages).
const MaxAtomicCommits = 1000

// codes of the atomic publish errors that AppendAtomic handles.
const (
	codeAtomicDuplicate = 10201 // atomic publish batch contains duplicate message id
)

// Conditional is one commit of an atomic append with its condition.
type Conditional struct {
	Commit Commit
	Expect Expect
}

// AppendAtomic appends every commit, each on its own aggregate's subject
// under its own condition, as one JetStream atomic batch: either every
// commit is stored, at consecutive stream sequences in the order given, or
// none is. A condition that does not hold fails the whole batch with
// ErrConflict. It returns the stream sequence of each commit.
//
// Two commits of one batch may not be on the same subject: the server
// checks each condition against the stream before the batch, and a second
// commit's condition could not see the first.
//
// A retried AppendAtomic of the same commits (same commit ids) within the
// duplicate window answers the sequences of the stored batch.
func (s *Store) AppendAtomic(ctx context.Context, commits []Conditional) ([]uint64, error) {
	switch {
	case len(commits) == 0:
		return nil, errors.New("append atomic: no commit")
	case len(commits) == 1:
		seq, err := s.Append(ctx, commits[0].Commit, commits[0].Expect)
		if err != nil {
			return nil, err
		}
		return []uint64{seq}, nil
	case len(commits) > MaxAtomicCommits:
		return nil, fmt.Errorf("append atomic: %d commits, at most %d go in one batch", len(commits), MaxAtomicCommits)
	}
	msgs := make([]*nats.Msg, len(commits))
	subjects := map[string]bool{}
	batchID := uuid.NewString()
	for i, cc := range commits {
		if err := checkCommit(cc.Commit); err != nil {
			return nil, fmt.Errorf("append atomic: %w", err)
		}
		body, err := EncodeCommit(cc.Commit, cc.Expect.Version)
		if err != nil {
			return nil, fmt.Errorf("append atomic: %w", err)
		}
		m, _ := Message(cc.Commit, body, cc.Expect)
		if subjects[m.Subject] {
			return nil, fmt.Errorf("append atomic: two commits on %s in one batch", m.Subject)
		}
		subjects[m.Subject] = true
		m.Header.Set(headerBatchID, batchID)
		m.Header.Set(headerBatchSeq, strconv.Itoa(i+1))
		m.Header.Set(headerExpectedStream, StreamName)
		m.Header.Set(headerExpectedSubjSeq, strconv.FormatUint(cc.Expect.LastSeq, 10))
		if cc.Expect.Filter != "" {
			m.Header.Set(headerExpectedSubjSeqOn, cc.Expect.Filter)
		}
		msgs[i] = m
	}
	last := msgs[len(msgs)-1]
	last.Header.Set(headerBatchCommit, "1")

	lastSeq, err := s.publishBatch(ctx, msgs)
	if err != nil {
		err = classify(fmt.Errorf("append atomic batch of %d commits (first %s on %s): %w",
			len(msgs), commits[0].Commit.CommitID, msgs[0].Subject, err))
		// As with Append: a batch stored once, whose answer was lost, is
		// refused when sent again (its message ids are known, or its
		// conditions no longer hold). It is stored when the last commit on
		// the batch's last subject is the batch's last commit.
		var apiErr *jetstream.APIError
		if errors.Is(err, ErrConflict) || (errors.As(err, &apiErr) && apiErr.ErrorCode == codeAtomicDuplicate) {
			if seq, ok := s.lastCommitIs(ctx, last.Subject, commits[len(commits)-1].Commit.CommitID); ok {
				return consecutive(seq, len(msgs)), nil
			}
			if !errors.Is(err, ErrConflict) {
				err = fmt.Errorf("%w: %w", ErrConflict, err)
			}
		}
		return nil, err
	}
	return consecutive(lastSeq, len(msgs)), nil
}

// consecutive is the sequences of n commits stored up to last.
func consecutive(last uint64, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = last - uint64(n-1-i)
	}
	return out
}

// batchAck is the server's answer to the commit of an atomic batch.
type batchAck struct {
	Stream string `json:"stream"`
	Seq    uint64 `json:"seq"`
	Batch  string `json:"batch"`
	Count  int    `json:"count"`
	Error  *struct {
		Code        int    `json:"code"`
		ErrorCode   uint16 `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// publishBatch sends the messages of one atomic batch on the store's
// connection (in order: one connection keeps them so) and waits for the
// answer to the last, which commits it.
func (s *Store) publishBatch(ctx context.Context, msgs []*nats.Msg) (uint64, error) {
	nc := s.js.Conn()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultReadTimeout)
		defer cancel()
	}
	// Every message asks for an answer: the server sends one for a message
	// it refuses before the commit (and none otherwise), so a refused batch
	// is known at once rather than at the commit's deadline.
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return 0, fmt.Errorf("subscribe: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	for _, m := range msgs {
		m.Reply = inbox
		if err := nc.PublishMsg(m); err != nil {
			return 0, fmt.Errorf("publish %s: %w", m.Subject, err)
		}
	}
	for {
		r, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return 0, fmt.Errorf("%w: %w", nats.ErrTimeout, err)
			}
			return 0, err
		}
		if len(r.Data) == 0 {
			continue // a flow-control answer of a large batch: no verdict
		}
		var ack batchAck
		if err := json.Unmarshal(r.Data, &ack); err != nil {
			return 0, fmt.Errorf("decode the batch's answer %q: %w", r.Data, err)
		}
		if ack.Error != nil {
			return 0, &jetstream.APIError{Code: ack.Error.Code, ErrorCode: jetstream.ErrorCode(ack.Error.ErrorCode), Description: ack.Error.Description}
		}
		if ack.Count != len(msgs) || ack.Seq == 0 {
			return 0, fmt.Errorf("the batch's answer stored %d of %d commits (seq %d)", ack.Count, len(msgs), ack.Seq)
		}
		return ack.Seq, nil
	}
}
