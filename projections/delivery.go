package projections

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// delivery is a consumer's commits as the NATS client's Consume callback
// hands them over, through a buffered channel. A callback per message
// costs the projector a channel receive, where the pull iterator's Next
// made two timers per message (its wait and a heartbeat check); when the
// projector falls behind, the callback blocks, the client stops pulling,
// and at most the channel and one pull's messages wait in memory.
type delivery struct {
	cc   jetstream.ConsumeContext
	msgs chan jetstream.Msg
	stop chan struct{}
	once sync.Once

	mu  sync.Mutex
	err error // the last error the client reported
}

// consumeCommits starts consuming cons, pulling up to pull messages at a
// time.
func consumeCommits(cons jetstream.Consumer, pull int, log zerolog.Logger) (*delivery, error) {
	d := &delivery{msgs: make(chan jetstream.Msg, 4096), stop: make(chan struct{})}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case d.msgs <- m:
		case <-d.stop:
		}
	}, jetstream.PullMaxMessages(pull), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		// Missed heartbeats and the like: the client pulls again by
		// itself. A terminal error also stops the consume (Closed).
		log.Debug().Err(err).Msg("consuming commits")
		d.mu.Lock()
		d.err = err
		d.mu.Unlock()
	}))
	if err != nil {
		return nil, err
	}
	d.cc = cc
	return d, nil
}

// Stop ends the consume; messages not yet taken are dropped (the consumer
// delivers them again).
func (d *delivery) Stop() {
	d.once.Do(func() {
		close(d.stop)
		d.cc.Stop()
	})
}

// closedErr is why the consume ended.
func (d *delivery) closedErr() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return fmt.Errorf("next commit: consuming stopped: %w", d.err)
	}
	return errors.New("next commit: consuming stopped")
}

// msgMeta is what the projector needs of a message's JetStream metadata.
type msgMeta struct {
	seq     uint64    // stream sequence
	pending uint64    // messages the stream held beyond this one when it was delivered
	stored  time.Time // when the stream stored it
}

// metaOf reads a message's metadata from its reply subject, as
// jetstream.Msg.Metadata does, without its allocations; a subject it does
// not know is read by Metadata.
func metaOf(m jetstream.Msg) (msgMeta, error) {
	if md, ok := parseAckReply(m.Reply()); ok {
		return md, nil
	}
	md, err := m.Metadata()
	if err != nil {
		return msgMeta{}, err
	}
	return msgMeta{seq: md.Sequence.Stream, pending: md.NumPending, stored: md.Timestamp}, nil
}

// parseAckReply reads the reply subject JetStream gives a delivered
// message, in its v1 form
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<timestamp ns>.<pending>
//
// or its v2 form (with domain and account hash; what follows the pending
// count, today a random token, is not read)
//
//	$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<timestamp ns>.<pending>[.<token>]
func parseAckReply(s string) (msgMeta, bool) {
	rest, ok := strings.CutPrefix(s, "$JS.ACK.")
	if !ok {
		return msgMeta{}, false
	}
	var tok [12]string
	n := 0
	for n < len(tok) {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			tok[n] = rest
			n++
			break
		}
		tok[n], rest = rest[:i], rest[i+1:]
		n++
	}
	var nums []string // delivered, stream seq, consumer seq, timestamp, pending
	switch {
	case n == 7:
		nums = tok[2:7]
	case n >= 9: // what follows the pending count is not read
		nums = tok[4:9]
	default:
		return msgMeta{}, false
	}
	var v [5]uint64
	for i, t := range nums {
		x, err := strconv.ParseUint(t, 10, 64)
		if err != nil {
			return msgMeta{}, false
		}
		v[i] = x
	}
	return msgMeta{seq: v[1], pending: v[4], stored: time.Unix(0, int64(v[3]))}, true
}
