// Package jsonscan reads JSON objects of known shape byte by byte, without
// reflection and without a token decoder's bookkeeping: the hot paths that
// read back what encoding/json wrote (the projector reads every commit and
// most payloads) use it, and fall back to a full decoder for anything it
// refuses.
//
// A Scanner is strict where it reads: members must be separated by commas,
// names must be plain ASCII (no escapes), strings must be valid JSON
// strings with valid UTF-8, integers must be JSON integers that fit in an
// int64. Values it skips (Skip) are not validated; the caller validates
// them. After the first error every method returns a zero value and Err
// reports the error.
package jsonscan

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// ErrUnexpected is what every refusal wraps.
var ErrUnexpected = errors.New("unexpected JSON")

// Scanner reads one JSON text.
type Scanner struct {
	b   []byte
	i   int
	err error
}

// New scans b.
func New(b []byte) Scanner { return Scanner{b: b} }

// Err is the first error met, nil when there was none.
func (s *Scanner) Err() error { return s.err }

// Offset is how many bytes have been read.
func (s *Scanner) Offset() int { return s.i }

// plainByte marks the bytes that stand for themselves in a string: printable
// ASCII but the quote and the backslash.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func (s *Scanner) fail(what string) {
	if s.err == nil {
		s.err = fmt.Errorf("%w: %s at byte %d", ErrUnexpected, what, s.i)
	}
}

func (s *Scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}

// peek is the next byte after white space, 0 at the end.
func (s *Scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *Scanner) expect(c byte, what string) bool {
	if s.err != nil {
		return false
	}
	if s.peek() != c {
		s.fail(what)
		return false
	}
	s.i++
	return true
}

// Object reads the '{' that opens an object.
func (s *Scanner) Object() bool { return s.expect('{', "not an object") }

// Array reads the '[' that opens an array.
func (s *Scanner) Array() bool { return s.expect('[', "not an array") }

// Member reads the name of the object's next member and the colon after
// it; n is how many members were read before. It returns false at the
// object's closing '}' (which it reads) or on an error.
func (s *Scanner) Member(n int) ([]byte, bool) {
	if s.err != nil {
		return nil, false
	}
	c := s.peek()
	if c == '}' {
		s.i++
		return nil, false
	}
	if s.i == len(s.b) {
		s.fail("an unexpected end")
		return nil, false
	}
	if n > 0 {
		if c != ',' {
			s.fail("no comma between members")
			return nil, false
		}
		s.i++
	}
	if s.peek() != '"' {
		s.fail("no member name")
		return nil, false
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		for j < len(s.b) && plainByte[s.b[j]] {
			j++
		}
		if j == len(s.b) {
			break
		}
		c := s.b[j]
		if c == '"' {
			s.i = j + 1
			if !s.expect(':', "no colon after a member name") {
				return nil, false
			}
			return s.b[start:j], true
		}
		if c < 0x20 || c == '\\' || c >= utf8.RuneSelf {
			s.fail("a member name that is not plain ASCII")
			return nil, false
		}
	}
	s.fail("an unterminated member name")
	return nil, false
}

// Elem reports whether the array has another element, reading the comma
// before it; n is how many elements were read before. It returns false
// at the array's closing ']' (which it reads) or on an error.
func (s *Scanner) Elem(n int) bool {
	if s.err != nil {
		return false
	}
	c := s.peek()
	if c == ']' {
		s.i++
		return false
	}
	if s.i == len(s.b) {
		s.fail("an unexpected end")
		return false
	}
	if n > 0 {
		if c != ',' {
			s.fail("no comma between elements")
			return false
		}
		s.i++
	}
	return true
}

// RawString reads a string and returns its contents as they are in the
// input when plain is true (no escapes: the bytes are the string, and
// alias the input), or unquoted into a new slice when it is false.
func (s *Scanner) RawString() (b []byte, plain bool) {
	if s.err != nil {
		return nil, false
	}
	if s.peek() != '"' {
		s.fail("not a string")
		return nil, false
	}
	start := s.i
	escaped, ascii := false, true
	for j := start + 1; j < len(s.b); j++ {
		for j < len(s.b) && plainByte[s.b[j]] {
			j++
		}
		if j == len(s.b) {
			break
		}
		switch c := s.b[j]; {
		case c == '"':
			s.i = j + 1
			raw := s.b[start+1 : j]
			if escaped {
				u, err := jsontext.AppendUnquote(nil, s.b[start:j+1])
				if err != nil {
					s.i = start
					s.fail("an invalid string")
					return nil, false
				}
				return u, false
			}
			if !ascii && !utf8.Valid(raw) {
				s.i = start
				s.fail("a string that is not valid UTF-8")
				return nil, false
			}
			return raw, true
		case c == '\\':
			escaped = true
			j++ // the escaped byte; AppendUnquote checks the escape
		case c < 0x20:
			s.i = j
			s.fail("a control character in a string")
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	s.fail("an unterminated string")
	return nil, false
}

// Text reads a string.
func (s *Scanner) Text() string {
	b, _ := s.RawString()
	return string(b)
}

// Int reads an integer.
func (s *Scanner) Int() int64 {
	if s.err != nil {
		return 0
	}
	s.ws()
	start, j := s.i, s.i
	if j < len(s.b) && s.b[j] == '-' {
		j++
	}
	digits := j
	for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' {
		j++
	}
	if j == digits || (s.b[digits] == '0' && j > digits+1) {
		s.fail("not an integer")
		return 0
	}
	if j < len(s.b) {
		switch s.b[j] {
		case '.', 'e', 'E':
			s.fail("a number that is not an integer")
			return 0
		}
	}
	v, err := strconv.ParseInt(string(s.b[start:j]), 10, 64)
	if err != nil {
		s.fail("an integer out of range")
		return 0
	}
	s.i = j
	return v
}

// Skip reads a value of any kind and returns its bytes. Only its extent
// is checked (strings closed, brackets balanced); the caller validates
// it.
func (s *Scanner) Skip() []byte {
	if s.err != nil {
		return nil
	}
	s.ws()
	start := s.i
	depth := 0
	for j := start; j < len(s.b); j++ {
		c := s.b[j]
		switch c {
		case '"':
			if j = stringEnd(s.b, j+1); j < 0 {
				s.fail("an unterminated string")
				return nil
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth < 0 {
				return s.end(start, j)
			}
		case ',', ' ', '\t', '\r', '\n':
			if depth == 0 {
				return s.end(start, j)
			}
		}
		if depth == 0 && (c == '"' || c == '}' || c == ']') {
			return s.end(start, j+1)
		}
	}
	if depth != 0 {
		s.fail("an unterminated value")
		return nil
	}
	return s.end(start, len(s.b))
}

// stringEnd is the index of the quote that ends the string whose
// contents start at j, -1 when none does.
func stringEnd(b []byte, j int) int {
	for ; j < len(b); j++ {
		for j < len(b) && plainByte[b[j]] {
			j++
		}
		if j == len(b) {
			break
		}
		switch b[j] {
		case '"':
			return j
		case '\\':
			j++ // the escaped byte
		}
	}
	return -1
}

func (s *Scanner) end(start, j int) []byte {
	if j == start {
		s.fail("no value")
		return nil
	}
	s.i = j
	return s.b[start:j]
}

// End reports whether only white space is left (and nothing failed).
func (s *Scanner) End() bool {
	if s.err != nil {
		return false
	}
	if s.peek() != 0 || s.i < len(s.b) {
		s.fail("data after the value")
		return false
	}
	return true
}
