package eventstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// PayloadReader decodes one event's payload from dec, where the payload is
// the next value, while its commit is read (the projector decodes every
// payload it reads; doing it in the same pass saves scanning it twice). It
// must consume exactly that value, or return an error.
type PayloadReader func(eventType string, schemaVersion int, dec *jsontext.Decoder) (any, error)

// CommitReader reads commit bodies in one pass over their bytes, reusing
// its decoder: the projector's fast path. It reads what EncodeCommit
// writes; anything else (a field it does not know, a payload before its
// type, text that is not valid UTF-8) is an error, and the caller falls
// back to DecodeCommit, which reads whatever encoding/json reads. One per
// goroutine.
type CommitReader struct {
	buf *bytes.Buffer
	dec jsontext.Decoder
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
	evs, decoded, err := r.read(seq, data, payload)
	if err != nil {
		return nil, nil, fmt.Errorf("read commit at seq %d: %w", seq, err)
	}
	return evs, decoded, nil
}

var errUnexpected = errors.New("not the commit format EncodeCommit writes")

func (r *CommitReader) read(seq uint64, data []byte, payload PayloadReader) ([]Event, []any, error) {
	r.buf = bytes.NewBuffer(data) // the decoder parses a bytes.Buffer in place, without a copy
	// Duplicate names are not checked (encoding/json never writes them,
	// and reads the last one, as this does): the check costs a lookup per
	// name.
	r.dec.Reset(r.buf, jsontext.AllowDuplicateNames(true))
	dec := &r.dec
	if err := expectDelim(dec, '{'); err != nil {
		return nil, nil, err
	}
	var env Event
	var evs []Event
	var decoded []any
	for dec.PeekKind() != '}' {
		name, err := dec.ReadValue()
		if err != nil {
			return nil, nil, err
		}
		switch string(name) {
		case `"commit_id"`:
			env.CommitID, err = readString(dec)
		case `"aggregate_type"`:
			env.AggregateType, err = r.readName()
		case `"aggregate_id"`:
			env.AggregateID, err = r.readName()
		case `"time"`:
			var s string
			if s, err = readString(dec); err == nil {
				env.Time, err = time.Parse(time.RFC3339Nano, s)
			}
		case `"actor"`:
			env.Actor, err = r.readName()
		case `"operation_id"`:
			env.OperationID, err = r.readName()
		case `"correlation_id"`:
			env.CorrelationID, err = r.readName()
		case `"causation_id"`:
			env.CausationID, err = r.readName()
		case `"fencing_token"`:
			env.FencingToken, err = readInt(dec)
		case `"events"`:
			evs, decoded, err = r.readEvents(seq, data, payload)
		default:
			err = fmt.Errorf("%w: field %s", errUnexpected, name)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, nil, err
	}
	if len(bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n")) > 0 {
		return nil, nil, fmt.Errorf("%w: data after the commit", errUnexpected)
	}
	for i := range evs {
		e := &evs[i]
		e.Seq, e.CommitID, e.AggregateType, e.AggregateID = seq, env.CommitID, env.AggregateType, env.AggregateID
		e.Time, e.Actor, e.OperationID = env.Time, env.Actor, env.OperationID
		e.CorrelationID, e.CausationID, e.FencingToken = env.CorrelationID, env.CausationID, env.FencingToken
	}
	return evs, decoded, nil
}

func (r *CommitReader) readEvents(seq uint64, data []byte, payload PayloadReader) ([]Event, []any, error) {
	dec := &r.dec
	if err := expectDelim(dec, '['); err != nil {
		return nil, nil, err
	}
	evs := make([]Event, 0, 1)
	var decoded []any
	for dec.PeekKind() != ']' {
		if err := expectDelim(dec, '{'); err != nil {
			return nil, nil, err
		}
		var e Event
		var d any
		seen := false
		for dec.PeekKind() != '}' {
			name, err := dec.ReadValue()
			if err != nil {
				return nil, nil, err
			}
			switch string(name) {
			case `"event_id"`:
				e.EventID, err = readString(dec)
			case `"type"`:
				e.Type, err = r.readName()
			case `"schema_version"`:
				var v int64
				v, err = readInt(dec)
				e.SchemaVersion = int(v)
			case `"aggregate_version"`:
				var v int64
				v, err = readInt(dec)
				e.AggregateVersion = uint64(v)
			case `"payload"`:
				if e.Type == "" {
					return nil, nil, fmt.Errorf("%w: a payload before its type", errUnexpected)
				}
				seen = true
				from := dec.InputOffset()
				if payload != nil {
					d, err = payload(e.Type, e.SchemaVersion, dec)
				} else {
					err = dec.SkipValue()
				}
				if err == nil {
					// The value's bytes: from after the name (past the
					// colon and any space) to where the decoder is now.
					e.Payload = json.RawMessage(bytes.TrimLeft(data[from:dec.InputOffset()], " \t\r\n:"))
				}
			default:
				err = fmt.Errorf("%w: event field %s", errUnexpected, name)
			}
			if err != nil {
				return nil, nil, err
			}
		}
		if err := expectDelim(dec, '}'); err != nil {
			return nil, nil, err
		}
		if !seen {
			return nil, nil, fmt.Errorf("%w: an event without a payload", errUnexpected)
		}
		evs = append(evs, e)
		if payload != nil {
			decoded = append(decoded, d)
		}
	}
	return evs, decoded, expectDelim(dec, ']')
}

func expectDelim(dec *jsontext.Decoder, k jsontext.Kind) error {
	t, err := dec.ReadToken()
	if err != nil {
		return err
	}
	if t.Kind() != k {
		return fmt.Errorf("%w: %v where %v was expected", errUnexpected, t.Kind(), k)
	}
	return nil
}

func readString(dec *jsontext.Decoder) (string, error) {
	t, err := dec.ReadToken()
	if err != nil {
		return "", err
	}
	if t.Kind() != '"' {
		return "", fmt.Errorf("%w: %v where a string was expected", errUnexpected, t.Kind())
	}
	return t.String(), nil
}

// readName reads a string that likely repeats, allocating it only the
// first time it is met.
func (r *CommitReader) readName() (string, error) {
	v, err := r.dec.ReadValue()
	if err != nil {
		return "", err
	}
	if v.Kind() != '"' {
		return "", fmt.Errorf("%w: %v where a string was expected", errUnexpected, v.Kind())
	}
	raw := v[1 : len(v)-1]
	if bytes.IndexByte(raw, '\\') >= 0 {
		b, err := jsontext.AppendUnquote(nil, v)
		return string(b), err
	}
	if s, ok := r.names[string(raw)]; ok {
		return s, nil
	}
	if r.names == nil || len(r.names) >= maxNames {
		r.names = make(map[string]string, 256)
	}
	s := string(raw)
	r.names[s] = s
	return s, nil
}

func readInt(dec *jsontext.Decoder) (int64, error) {
	v, err := dec.ReadValue()
	if err != nil {
		return 0, err
	}
	if v.Kind() != '0' {
		return 0, fmt.Errorf("%w: %v where a number was expected", errUnexpected, v.Kind())
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s is not an integer", errUnexpected, v)
	}
	return n, nil
}
