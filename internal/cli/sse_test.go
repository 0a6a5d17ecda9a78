package cli

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func readAll(t *testing.T, stream string, lastID string) ([]sseMessage, *sseReader) {
	t.Helper()
	r := newSSEReader(strings.NewReader(stream), lastID)
	var out []sseMessage
	for {
		m, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, r
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, m)
	}
}

func TestCLISSEReaderFields(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream string
		want   []sseMessage
		lastID string
		retry  time.Duration
	}{
		{name: "one event", stream: "id: 7.0\nevent: StepStarted\ndata: {\"a\":1}\n\n",
			want: []sseMessage{{ID: "7.0", Event: "StepStarted", Data: `{"a":1}`}}, lastID: "7.0"},
		{name: "multi-line data joined by LF, no trailing LF", stream: "data: one\ndata: two\ndata:three\n\n",
			want: []sseMessage{{Event: "message", Data: "one\ntwo\nthree"}}},
		{name: "one leading space dropped, not more", stream: "data:  two spaces\n\n",
			want: []sseMessage{{Event: "message", Data: " two spaces"}}},
		{name: "comments and keepalives are skipped", stream: ": keepalive\n: hello\ndata: x\n: between\n\n: keepalive\n",
			want: []sseMessage{{Event: "message", Data: "x"}}},
		{name: "the id carries over to later messages", stream: "id: 1.0\ndata: a\n\ndata: b\n\n",
			want: []sseMessage{{ID: "1.0", Event: "message", Data: "a"}, {ID: "1.0", Event: "message", Data: "b"}}, lastID: "1.0"},
		{name: "an id without data dispatches nothing but sets the last id", stream: "id: 9.3\n\n",
			want: nil, lastID: "9.3"},
		{name: "an id with NUL is ignored", stream: "id: 1.0\n\nid: 2\x00\ndata: x\n\n",
			want: []sseMessage{{ID: "1.0", Event: "message", Data: "x"}}, lastID: "1.0"},
		{name: "empty id resets it", stream: "id: 1.0\ndata: a\n\nid\ndata: b\n\n",
			want: []sseMessage{{ID: "1.0", Event: "message", Data: "a"}, {ID: "", Event: "message", Data: "b"}}},
		{name: "retry in ms", stream: "retry: 2500\ndata: x\n\n", want: []sseMessage{{Event: "message", Data: "x"}}, retry: 2500 * time.Millisecond},
		{name: "retry that is not digits is ignored", stream: "retry: 2s\nretry: -1\nretry:\ndata: x\n\n", want: []sseMessage{{Event: "message", Data: "x"}}},
		{name: "event type does not leak into the next message", stream: "event: A\ndata: 1\n\ndata: 2\n\n",
			want: []sseMessage{{Event: "A", Data: "1"}, {Event: "message", Data: "2"}}},
		{name: "event without data is dropped with its type", stream: "event: A\n\ndata: 2\n\n",
			want: []sseMessage{{Event: "message", Data: "2"}}},
		{name: "CRLF and lone CR end lines", stream: "id: 3.1\r\nevent: E\rdata: a\r\ndata: b\r\r\n",
			want: []sseMessage{{ID: "3.1", Event: "E", Data: "a\nb"}}, lastID: "3.1"},
		{name: "a field without colon has an empty value", stream: "data\ndata\n\n",
			want: []sseMessage{{Event: "message", Data: "\n"}}},
		{name: "unknown fields are ignored", stream: "foo: bar\ndata: x\n\n", want: []sseMessage{{Event: "message", Data: "x"}}},
		{name: "a leading BOM is dropped", stream: "\xef\xbb\xbfdata: x\n\n", want: []sseMessage{{Event: "message", Data: "x"}}},
		{name: "a message cut off by the end is not dispatched", stream: "data: whole\n\ndata: half\n",
			want: []sseMessage{{Event: "message", Data: "whole"}}},
		{name: "the id of a message cut off by the end does not count", stream: "id: 1.0\ndata: a\n\nid: 2.0\ndata: half\n",
			want: []sseMessage{{ID: "1.0", Event: "message", Data: "a"}}, lastID: "1.0"},
		{name: "a line cut off by the end is not a line", stream: "data: x\n\ndata: y", want: []sseMessage{{Event: "message", Data: "x"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, r := readAll(t, tc.stream, "")
			if len(got) != len(tc.want) {
				t.Fatalf("got %d messages %q, want %q", len(got), got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("message %d: got %+v, want %+v", i, got[i], tc.want[i])
				}
			}
			if r.LastID() != tc.lastID {
				t.Errorf("last id %q, want %q", r.LastID(), tc.lastID)
			}
			if r.Retry != tc.retry {
				t.Errorf("retry %s, want %s", r.Retry, tc.retry)
			}
		})
	}
}

// The reader gets the same messages whatever the stream's chunks: byte by
// byte (a CR at the end of one read and its LF in the next).
func TestCLISSEReaderByteByByte(t *testing.T) {
	stream := ": keepalive\r\nid: 5.0\r\nevent: StepSucceeded\r\ndata: {\"step\":\r\ndata: \"x\"}\r\n\r\nid: 5.1\rdata: y\r\r"
	r := newSSEReader(iotest.OneByteReader(strings.NewReader(stream)), "")
	var got []sseMessage
	for {
		m, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	want := []sseMessage{{ID: "5.0", Event: "StepSucceeded", Data: "{\"step\":\n\"x\"}"}, {ID: "5.1", Event: "message", Data: "y"}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if r.Comments != 1 {
		t.Errorf("comments %d, want 1", r.Comments)
	}
}

// A resumed reader starts with the id it was given.
func TestCLISSEReaderResumesWithLastID(t *testing.T) {
	got, r := readAll(t, "data: x\n\n", "12.3")
	if len(got) != 1 || got[0].ID != "12.3" || r.LastID() != "12.3" {
		t.Fatalf("got %+v, last id %q", got, r.LastID())
	}
}

// A hostile stream cannot make the reader hold unbounded memory.
func TestCLISSEReaderBoundsLinesAndData(t *testing.T) {
	long := "data: " + strings.Repeat("x", maxSSELine+10) + "\n\n"
	r := newSSEReader(strings.NewReader(long), "")
	if _, err := r.Next(); err == nil || !strings.Contains(err.Error(), "line is over") {
		t.Fatalf("a line past the bound: %v", err)
	}
	line := "data: " + strings.Repeat("y", maxSSELine-100) + "\n"
	r = newSSEReader(strings.NewReader(strings.Repeat(line, maxSSEData/maxSSELine+2)+"\n"), "")
	if _, err := r.Next(); err == nil || !strings.Contains(err.Error(), "data is over") {
		t.Fatalf("data past the bound: %v", err)
	}
}
