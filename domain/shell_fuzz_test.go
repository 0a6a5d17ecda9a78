package domain

import (
	"strings"
	"testing"
)

// FuzzQuote checks that for any string without NUL, /bin/sh turns Quote's
// output back into exactly that string, and that the output never leaves a
// quote open or an unsafe byte unquoted. It runs /bin/sh once per input.
func FuzzQuote(f *testing.F) {
	for _, s := range nastyShellWords {
		if len(s) < 1024 {
			f.Add(s)
		}
	}
	f.Fuzz(func(t *testing.T, in string) {
		q := ShellQuote(in)
		checkStructure(t, in, q)
		if strings.IndexByte(in, 0) >= 0 {
			return // no program can receive a NUL in argv; TestNULFailsClosed covers it
		}
		if len(q) > 100_000 {
			t.Skip("over Linux's 128 KiB limit for one argv string")
		}
		if got := runQuoted(t, "/bin/sh", in); got != in {
			t.Fatalf("sh: printf %%s %s printed %q, want %q", trimShellOut(q), trimShellOut(got), trimShellOut(in))
		}
	})
}
