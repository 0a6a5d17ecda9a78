package domain

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// nastyShellWords are inputs a shell treats specially.
var nastyShellWords = []string{
	"", "'", "''", "a'b", "'a'", `'\''`, "$(reboot)", "`reboot`", "${HOME}", "$HOME",
	"$0", "a;reboot", "a && reboot", "a || reboot", "a | cat", "a\nreboot", "\n",
	"a\tb", "*", "/*", "?", "[a]", "~", "~root", "!", "!!", `\`, `\\`, `a\`, `\'`,
	" ", "  lead and trail  ", "a b", "héllo, 世界", "\xff\xfe invalid \xc3", "-rf",
	"--", "-", "=", "=ls", "a=b", "%s", "%%", "#", "a#b", "{a,b}", "a>b", "<x", "&",
	"(x)", `"`, `"$x"`, "\r\n", "\x01\x1b[31m", "\x7f", "plain", "/usr/bin/dm-worker",
	"host:8261", "user@host", "a+b,c", strings.Repeat("a'b$`\\\n", 8000),
}

func TestQuoteTable(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "''"},
		{"'", `''\'''`},
		{"a'b", `'a'\''b'`},
		{"$(reboot)", "'$(reboot)'"},
		{"a b", "'a b'"},
		{"~", "'~'"},
		{"=ls", "'=ls'"},
		{"plain", "plain"},
		{"/opt/dm-v8.5.0/bin/dm-master", "/opt/dm-v8.5.0/bin/dm-master"},
		{"--config=/etc/dm.toml", "--config=/etc/dm.toml"},
		{"-rf", "-rf"}, // quoting would not stop it being an option
		{"user@10.0.0.1:22", "user@10.0.0.1:22"},
		{"a\x00b", "'a\x00b'"},
	} {
		if got := ShellQuote(tc.in); got != tc.want {
			t.Errorf("ShellQuote(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestQuoteRoundTrip(t *testing.T) {
	for _, sh := range shells(t) {
		for _, in := range nastyShellWords {
			if got := runQuoted(t, sh, in); got != in {
				t.Errorf("%s: printf %%s %s printed %q, want %q", sh, ShellQuote(in), trimShellOut(got), trimShellOut(in))
			}
			checkStructure(t, in, ShellQuote(in))
		}
	}
}

func TestJoinKeepsArgumentBoundaries(t *testing.T) {
	cases := [][]string{
		{""},
		{"", ""},
		{"a b", "c"},
		{"a'b", "$(reboot)", "", "*", "x\ny", "-n", "=x", "if", "a=b"},
		nastyShellWords,
	}
	for _, sh := range shells(t) {
		for _, args := range cases {
			got := runSh(t, sh, `set -- `+ShellJoin(args...)+`; printf '%s\0' "$@"`)
			if want := nulJoin(args); got != want {
				t.Errorf("%s: ShellJoin(%q) gave args %q", sh, args, trimShellOut(got))
			}
		}
	}
}

// TestCommandPosition runs Join's output as a command line, so its first
// word is the program: names that are assignments or shellReserved words unquoted
// must still run as programs.
func TestCommandPosition(t *testing.T) {
	dir := t.TempDir()
	names := []string{"prog", "a=b", "if", "done", "in", "time", "-x", "+x", "--", "=eq", "sp ace", "q'uote", "$(x)"}
	for _, n := range names {
		script := "#!/bin/sh\nprintf '%s\\0' " + ShellQuote(n) + " \"$@\"\n"
		if err := os.WriteFile(filepath.Join(dir, n), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"x y", "'", ""}
	for _, sh := range shells(t) {
		for _, n := range names {
			line, err := ShellCommand(n, args...)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(sh, "-c", line)
			cmd.Env = []string{"PATH=" + dir}
			out, err := cmd.Output()
			if err != nil {
				t.Errorf("%s: %s: %v", sh, line, err)
				continue
			}
			if want := nulJoin(append([]string{n}, args...)); string(out) != want {
				t.Errorf("%s: %s ran with %q, want %q", sh, line, out, want)
			}
		}
	}
}

func TestJoinFirstWord(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"ls", "-l", "a=b"}, "ls -l a=b"},
		{[]string{"a=b", "x"}, "'a=b' x"},
		{[]string{"if"}, "'if'"},
		{[]string{"-x", "-x"}, "'-x' -x"},
		{[]string{"+x"}, "'+x'"},
		{[]string{"rm", "-rf", "--", "/tmp/a b"}, "rm -rf -- '/tmp/a b'"},
	} {
		if got := ShellJoin(tc.args...); got != tc.want {
			t.Errorf("ShellJoin(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestCommandRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"", nil, "empty program name"},
		{"a\x00b", nil, "NUL"},
		{"rm", []string{"-rf", "/tmp/x\x00/y"}, "argument 2"},
	} {
		line, err := ShellCommand(tc.name, tc.args...)
		if err == nil || !errors.Is(err, ErrInvalidShellCommand) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ShellCommand(%q, %q) = %q, %v; want invalid error mentioning %q", tc.name, tc.args, line, err, tc.msg)
		}
	}
	if got, err := ShellCommand("rm", "-rf", "--", "/tmp/it's"); err != nil || got != `rm -rf -- '/tmp/it'\''s'` {
		t.Errorf("Command = %q, %v", got, err)
	}
}

// TestNULFailsClosed: a consumer that cuts the line at a NUL must be left
// with an unterminated quote, not a shorter valid command.
func TestNULFailsClosed(t *testing.T) {
	line := ShellJoin("rm", "-rf", "/tmp/x\x00/y", "z")
	cut := line[:strings.IndexByte(line, 0)]
	if _, end := scanQuoted(cut); end != inQuote {
		t.Fatalf("%q cut at NUL is %q, which ends outside quotes", line, cut)
	}
	if err := exec.Command("/bin/sh", "-c", cut).Run(); err == nil {
		t.Fatalf("sh -c %q succeeded", cut)
	}
}

// shells returns /bin/sh and, where installed, other POSIX shells dmgr may
// meet as a login shell.
func shells(t testing.TB) []string {
	t.Helper()
	out := []string{"/bin/sh"}
	for _, n := range []string{"bash", "dash", "zsh", "ksh", "mksh", "busybox"} {
		if p, err := exec.LookPath(n); err == nil {
			if n == "busybox" {
				continue // needs "busybox sh"; not worth the special case
			}
			out = append(out, p)
		}
	}
	return out
}

func runQuoted(t testing.TB, sh, in string) string {
	t.Helper()
	return runSh(t, sh, "printf %s "+ShellQuote(in))
}

func runSh(t testing.TB, sh, line string) string {
	t.Helper()
	cmd := exec.Command(sh, "-c", line)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s -c %q: %v: %s", sh, trimShellOut(line), err, stderr.String())
	}
	return string(out)
}

func nulJoin(args []string) string {
	var b strings.Builder
	for _, a := range args {
		b.WriteString(a)
		b.WriteByte(0)
	}
	return b.String()
}

func trimShellOut(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

const (
	outside = iota
	inQuote
)

// scan walks q as sh would tokenise it, returning the unquoted bytes (which
// must all be safe) and whether it ends inside a single-quoted part.
func scanQuoted(q string) (bare string, state int) {
	var b strings.Builder
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case state == inQuote && c == '\'':
			state = outside
		case state == inQuote:
		case c == '\'':
			state = inQuote
		case c == '\\' && i+1 < len(q) && q[i+1] == '\'':
			i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), state
}

// checkStructure asserts that ShellQuote(in) balances its quotes and that every
// byte outside quotes is one the shell does not interpret.
func checkStructure(t testing.TB, in, q string) {
	t.Helper()
	bare, state := scanQuoted(q)
	if state != outside {
		t.Fatalf("ShellQuote(%q) = %q leaves a quote open", trimShellOut(in), trimShellOut(q))
	}
	for i := 0; i < len(bare); i++ {
		if strings.IndexByte("_./:=@%+,-", bare[i]) < 0 && !isAlnum(bare[i]) {
			t.Fatalf("ShellQuote(%q) = %q leaves %q outside quotes", trimShellOut(in), trimShellOut(q), bare[i])
		}
	}
	if strings.HasPrefix(bare, "=") && bare == q {
		t.Fatalf("ShellQuote(%q) = %q starts with a bare = (zsh expands =cmd)", in, q)
	}
	if q == "" {
		t.Fatalf("ShellQuote(%q) is empty, which the shell drops as a word", in)
	}
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
