package remote

import (
	"sync"
	"unicode/utf8"
)

// tailBuffer keeps the last n bytes written to it, in at most 2n bytes of
// memory, however much is written. It is safe for concurrent use.
type tailBuffer struct {
	mu        sync.Mutex
	n         int
	buf       []byte
	truncated bool
}

func newTail(n int) *tailBuffer { return &tailBuffer{n: n} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(p) >= t.n {
		t.truncated = t.truncated || len(p) > t.n || len(t.buf) > 0
		t.buf = append(t.buf[:0], p[len(p)-t.n:]...)
		return len(p), nil
	}
	if len(t.buf)+len(p) > 2*t.n {
		keep := t.n - len(p) // keep + len(p) == n
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-keep:]...)
		t.truncated = true
	}
	t.buf = append(t.buf, p...)
	return len(p), nil
}

// String returns the last n bytes. When older output was dropped, a UTF-8
// sequence cut at the start is dropped too, so the text starts on a
// character boundary.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if len(b) > t.n {
		b = b[len(b)-t.n:]
		t.truncated = true
	}
	if t.truncated {
		for i := 0; i < utf8.UTFMax-1 && len(b) > 0 && !utf8.RuneStart(b[0]); i++ {
			b = b[1:]
		}
	}
	return string(b)
}
