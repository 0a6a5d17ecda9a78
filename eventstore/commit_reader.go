package eventstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/dmgr/dmgr/internal/jsonscan"
)

// PayloadReader decodes one event's payload while its commit is read
// (the projector decodes every payload it reads). It returns nil, nil for
// a payload it does not decode, and the reader then checks that the
// payload is JSON; one it decodes it must refuse unless it is JSON.
type PayloadReader func(eventType string, schemaVersion int, payload []byte) (any, error)

// CommitReader reads commit bodies in one pass over their bytes with a
// hand-written scanner: the projector's fast path. It reads what
// EncodeCommit writes (white space allowed); anything else (a field it
// does not know, a payload before its type, text that is not valid
// UTF-8, an escaped field name) is an error, and the caller falls back to
// DecodeCommit, which reads whatever encoding/json reads. One per
// goroutine.
type CommitReader struct {
	// names holds the strings that repeat from commit to commit (types,
	// aggregates, actors, operations), so that each is allocated once.
	names map[string]string
}

// maxNames bounds CommitReader.names; it starts again when full.
const maxNames = 4096

// Read decodes the commit at stream sequence seq. When payload is not nil,
// it is called for every event and its results are returned, one per
// event. Payloads alias data.
func (r *CommitReader) Read(seq uint64, data []byte, payload PayloadReader) ([]Event, []any, error) {
	evs, decoded, err := r.read(data, payload)
	if err != nil {
		return nil, nil, fmt.Errorf("read commit at seq %d: %w", seq, err)
	}
	for i := range evs {
		evs[i].Seq = seq
	}
	return evs, decoded, nil
}

var errUnexpected = errors.New("not the commit format EncodeCommit writes")

func (r *CommitReader) read(data []byte, payload PayloadReader) ([]Event, []any, error) {
	s := jsonscan.New(data)
	var env Event
	var evs []Event
	var decoded []any
	var err error
	if s.Object() {
		for n := 0; ; n++ {
			name, ok := s.Member(n)
			if !ok {
				break
			}
			switch string(name) {
			case "commit_id":
				env.CommitID = s.Text()
			case "aggregate_type":
				env.AggregateType = r.name(&s)
			case "aggregate_id":
				env.AggregateID = r.name(&s)
			case "time":
				if t := s.Text(); s.Err() == nil {
					if env.Time, err = time.Parse(time.RFC3339Nano, t); err != nil {
						return nil, nil, fmt.Errorf("%w: time: %w", errUnexpected, err)
					}
				}
			case "actor":
				env.Actor = r.name(&s)
			case "actor_token":
				env.ActorToken = s.Text()
			case "group":
				env.Group = r.name(&s)
			case "operation_id":
				env.OperationID = r.name(&s)
			case "correlation_id":
				env.CorrelationID = r.name(&s)
			case "causation_id":
				env.CausationID = r.name(&s)
			case "fencing_token":
				env.FencingToken = s.Int()
			case "events":
				if evs, decoded, err = r.readEvents(&s, payload); err != nil {
					return nil, nil, err
				}
			default:
				return nil, nil, fmt.Errorf("%w: field %q", errUnexpected, name)
			}
		}
	}
	if !s.End() {
		return nil, nil, fmt.Errorf("%w: %w", errUnexpected, s.Err())
	}
	for i := range evs {
		e := &evs[i]
		e.CommitID, e.AggregateType, e.AggregateID = env.CommitID, env.AggregateType, env.AggregateID
		e.Time, e.Actor, e.OperationID = env.Time, env.Actor, env.OperationID
		e.ActorToken, e.Group = env.ActorToken, env.Group
		e.CorrelationID, e.CausationID, e.FencingToken = env.CorrelationID, env.CausationID, env.FencingToken
	}
	return evs, decoded, nil
}

func (r *CommitReader) readEvents(s *jsonscan.Scanner, payload PayloadReader) ([]Event, []any, error) {
	evs := make([]Event, 0, 1)
	var decoded []any
	if !s.Array() {
		return nil, nil, nil // the caller reports the scanner's error
	}
	for i := 0; s.Elem(i); i++ {
		var e Event
		var d any
		seen := false
		if !s.Object() {
			break
		}
		for n := 0; ; n++ {
			name, ok := s.Member(n)
			if !ok {
				break
			}
			switch string(name) {
			case "event_id":
				e.EventID = s.Text()
			case "type":
				e.Type = r.name(s)
			case "schema_version":
				e.SchemaVersion = int(s.Int())
			case "aggregate_version":
				v := s.Int()
				if v < 0 {
					return nil, nil, fmt.Errorf("%w: a negative aggregate version", errUnexpected)
				}
				e.AggregateVersion = uint64(v)
			case "payload":
				if e.Type == "" {
					return nil, nil, fmt.Errorf("%w: a payload before its type", errUnexpected)
				}
				seen = true
				e.Payload = json.RawMessage(s.Skip())
				if s.Err() != nil {
					break
				}
				var err error
				if payload != nil {
					if d, err = payload(e.Type, e.SchemaVersion, e.Payload); err != nil {
						return nil, nil, err
					}
				}
				if d == nil && !jsontext.Value(e.Payload).IsValid() {
					return nil, nil, fmt.Errorf("%w: the payload of event %d is not JSON", errUnexpected, i)
				}
			default:
				return nil, nil, fmt.Errorf("%w: event field %q", errUnexpected, name)
			}
		}
		if s.Err() != nil {
			break
		}
		if !seen {
			return nil, nil, fmt.Errorf("%w: an event without a payload", errUnexpected)
		}
		evs = append(evs, e)
		if payload != nil {
			decoded = append(decoded, d)
		}
	}
	return evs, decoded, nil
}

// name reads a string that likely repeats, allocating it only the first
// time it is met.
func (r *CommitReader) name(s *jsonscan.Scanner) string {
	raw, plain := s.RawString()
	if !plain {
		return string(raw)
	}
	if v, ok := r.names[string(raw)]; ok {
		return v
	}
	if r.names == nil || len(r.names) >= maxNames {
		r.names = make(map[string]string, 256)
	}
	v := string(raw)
	r.names[v] = v
	return v
}
