package cli

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"time"
)

// sseMessage is one message of a text/event-stream, as the WHATWG
// HTML specification's event stream interpretation dispatches it.
type sseMessage struct {
	// ID is the stream's last event id after this message (the id field of
	// this message, or of an earlier one when it had none).
	ID    string
	Event string // the event field; "message" when the message had none
	Data  string // the data fields joined by "\n"
}

// maxSSELine bounds one line and maxSSEData one message's data: a step's
// output tail is a few KiB; a server that sends more is not one we trust.
const (
	maxSSELine = 4 << 20
	maxSSEData = 16 << 20
)

// sseReader reads messages from an event stream: fields id, event, data
// and retry; lines that start with ':' are comments; lines end with CRLF,
// LF or CR; a message is dispatched by an empty line; a message cut off
// by the end of the stream is dropped, as the specification says.
type sseReader struct {
	br     *bufio.Reader
	lastID string // set when a message ends (a blank line), as the spec's "last event ID string"
	idBuf  string // the id field's value ("last event ID buffer")
	// Retry is the reconnection delay the stream asked for (retry field),
	// zero until it asks.
	Retry time.Duration
	// Comments counts the comment lines read (": keepalive").
	Comments int

	skipLF  bool // the previous line ended with CR: a following LF is part of it
	started bool // the first line was read (a leading BOM is dropped)
	line    []byte
}

func newSSEReader(r io.Reader, lastID string) *sseReader {
	return &sseReader{br: bufio.NewReaderSize(r, 32<<10), lastID: lastID, idBuf: lastID}
}

// LastID is the event id of the last message the stream ended (what
// Last-Event-ID sends on reconnection): an id in a message cut off by the
// end of the stream does not count.
func (r *sseReader) LastID() string { return r.lastID }

// Next answers the next message; io.EOF when the stream ended (a message
// not terminated by an empty line is not answered).
func (r *sseReader) Next() (sseMessage, error) {
	var (
		data    bytes.Buffer
		hasData bool
		event   string
	)
	for {
		line, err := r.readLine()
		if err != nil {
			return sseMessage{}, err
		}
		if len(line) == 0 { // dispatch
			r.lastID = r.idBuf
			if !hasData {
				event = ""
				continue
			}
			d := data.Bytes()
			d = bytes.TrimSuffix(d, []byte("\n"))
			if event == "" {
				event = "message"
			}
			return sseMessage{ID: r.lastID, Event: event, Data: string(d)}, nil
		}
		if line[0] == ':' {
			r.Comments++
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		switch string(field) {
		case "event":
			event = string(value)
		case "data":
			if data.Len()+len(value) > maxSSEData {
				return sseMessage{}, fmt.Errorf("event stream: a message's data is over %d bytes", maxSSEData)
			}
			data.Write(value)
			data.WriteByte('\n')
			hasData = true
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				r.idBuf = string(value)
			}
		case "retry":
			if isASCIIDigits(value) {
				if ms, err := strconv.ParseInt(string(value), 10, 64); err == nil && ms <= int64(time.Hour/time.Millisecond) {
					r.Retry = time.Duration(ms) * time.Millisecond
				}
			}
		default:
			// unknown fields are ignored
		}
	}
}

func isASCIIDigits(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// readLine answers one line without its end (CRLF, LF or CR). The slice
// is valid until the next call. A CR ends the line at once (the stream
// may pause after it); an LF right after it is then skipped.
func (r *sseReader) readLine() ([]byte, error) {
	r.line = r.line[:0]
	for {
		c, err := r.br.ReadByte()
		if err != nil {
			return nil, err // a line cut off by the end is not a line
		}
		if r.skipLF {
			r.skipLF = false
			if c == '\n' {
				continue
			}
		}
		switch c {
		case '\n':
			return r.firstLine()
		case '\r':
			r.skipLF = true
			return r.firstLine()
		}
		if len(r.line) >= maxSSELine {
			return nil, fmt.Errorf("event stream: a line is over %d bytes", maxSSELine)
		}
		r.line = append(r.line, c)
	}
}

// firstLine drops a UTF-8 BOM from the stream's first line.
func (r *sseReader) firstLine() ([]byte, error) {
	if !r.started {
		r.started = true
		r.line = bytes.TrimPrefix(r.line, []byte("\xef\xbb\xbf"))
	}
	return r.line, nil
}
