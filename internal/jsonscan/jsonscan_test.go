package jsonscan

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// readObject reads {"s": string, "n": int, "x": any} as a caller would.
func readObject(in string) (s string, n int64, x string, err error) {
	sc := New([]byte(in))
	if sc.Object() {
		for i := 0; ; i++ {
			name, ok := sc.Member(i)
			if !ok {
				break
			}
			switch string(name) {
			case "s":
				s = sc.Text()
			case "n":
				n = sc.Int()
			default:
				x = string(sc.Skip())
			}
		}
	}
	sc.End()
	return s, n, x, sc.Err()
}

func TestScannerReadsObjects(t *testing.T) {
	for _, tc := range []struct {
		in      string
		s       string
		n       int64
		x       string
		comment string
	}{
		{`{"s":"a","n":-12,"x":{"y":[1,"]}",{}]}}`, "a", -12, `{"y":[1,"]}",{}]}`, "compact, a nested value skipped whole"},
		{" {\n \"x\" : \"q\\\"\" , \"n\":0,\t\"s\":\"\" } ", "", 0, `"q\""`, "white space anywhere, any order"},
		{`{"s":"\u00e9\n\"☃","x":true}`, "é\n\"☃", 0, "true", "escapes and UTF-8"},
		{`{"x":null}`, "", 0, "null", "a literal"},
		{`{"x":-1.5e3}`, "", 0, "-1.5e3", "a number skipped"},
		{`{}`, "", 0, "", "empty"},
		{`{"n":9223372036854775807}`, "", 9223372036854775807, "", "the largest int64"},
	} {
		s, n, x, err := readObject(tc.in)
		if err != nil || s != tc.s || n != tc.n || x != tc.x {
			t.Errorf("%s: %q read as s=%q n=%d x=%q err=%v; want s=%q n=%d x=%q", tc.comment, tc.in, s, n, x, err, tc.s, tc.n, tc.x)
		}
	}
}

func TestScannerRefusesWhatIsNotJSONOrNotItsShape(t *testing.T) {
	for in, why := range map[string]string{
		`{"s":"a" "n":1}`:           "no comma between members",
		`{"s":"a",}`:                "no member name",
		`{"s":"a"`:                  "unexpected end",
		`{"s" "a"}`:                 "no colon",
		`{s:"a"}`:                   "no member name",
		`{"s\u0041":"a"}`:           "not plain ASCII",
		`{"é":"a"}`:                 "not plain ASCII",
		"{\"s\":\"a\nb\"}":          "control character",
		`{"s":"\x"}`:                "invalid string",
		`{"s":"\ud800"}`:            "invalid string",
		"{\"s\":\"\xff\"}":          "not valid UTF-8",
		"{\"s\":\"\\n\xff\"}":       "invalid string",
		`{"s":"abc`:                 "unterminated string",
		`{"s":1}`:                   "not a string",
		`{"n":"1"}`:                 "not an integer",
		`{"n":01}`:                  "not an integer",
		`{"n":1.0}`:                 "not an integer",
		`{"n":1e3}`:                 "not an integer",
		`{"n":-}`:                   "not an integer",
		`{"n":9223372036854775808}`: "out of range",
		`{"x":}`:                    "no value",
		`{"x":[1,2}`:                "unexpected end", // Skip does not match brackets; the caller validates
		`{"x":[1,{2}`:               "unterminated value",
		`{"x":"a}`:                  "unterminated string",
		`{"s":"a"}x`:                "data after",
		`{"s":"a"}` + "\x00":        "data after",
		`[]`:                        "not an object",
		``:                          "not an object",
	} {
		_, _, _, err := readObject(in)
		if !errors.Is(err, ErrUnexpected) || !strings.Contains(err.Error(), why) {
			t.Errorf("%q: error %v, want one saying %q", in, err, why)
		}
	}
}

func TestScannerReadsArrays(t *testing.T) {
	sc := New([]byte(` [ "a" ,"b","c"] `))
	var got []string
	if sc.Array() {
		for i := 0; sc.Elem(i); i++ {
			got = append(got, sc.Text())
		}
	}
	if !sc.End() || strings.Join(got, ",") != "a,b,c" {
		t.Fatalf("read %v, err %v", got, sc.Err())
	}
	sc = New([]byte(`["a" "b"]`))
	sc.Array()
	for i := 0; sc.Elem(i); i++ {
		_ = sc.Text()
	}
	if sc.Err() == nil || !strings.Contains(sc.Err().Error(), "no comma between elements") {
		t.Fatalf("missing comma: %v", sc.Err())
	}
}

// FuzzString: a string the scanner reads is one the JSON v2 decoder reads
// the same, and the scanner reads every string the decoder reads.
func FuzzString(f *testing.F) {
	for _, s := range []string{`"a"`, `"\u00e9\n"`, `"☃"`, "\"\xff\"", `"\ud83d\ude00"`, `"\ud800"`, `"a\"b"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		sc := New(in)
		got := sc.Text()
		var want string
		werr := jsonv2.Unmarshal(in[:max(sc.Offset(), 0)], &want)
		if sc.Err() == nil {
			if werr != nil || got != want {
				t.Fatalf("%q: scanner read %q, the decoder %q (%v)", in, got, want, werr)
			}
			return
		}
		// Refused: the decoder refuses the same string.
		dec := jsontext.NewDecoder(bytes.NewReader(in))
		var v string
		if dec.PeekKind() == '"' && jsonv2.UnmarshalDecode(dec, &v) == nil {
			t.Fatalf("%q: scanner refused (%v), the decoder read %q", in, sc.Err(), v)
		}
	})
}

// FuzzSkip: for a valid JSON value, Skip returns exactly its bytes.
func FuzzSkip(f *testing.F) {
	for _, s := range []string{`1`, `"a"`, `{"a":[1,{"b":"]"}]}`, `[]`, `null`, `"\"}"`, ` {"x" : 1 } `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if !jsontext.Value(in).IsValid() {
			return
		}
		sc := New(append(append([]byte{}, in...), ','))
		got := sc.Skip()
		if want := bytes.TrimSpace(in); sc.Err() != nil || !bytes.Equal(got, want) {
			t.Fatalf("Skip(%q) = %q (%v), want %q", in, got, sc.Err(), want)
		}
	})
}
