package shell

import (
	"errors"
	"fmt"
	"strings"
)

// Quote returns s as one word for a POSIX shell: the shell turns the result
// back into exactly s, with no expansion, splitting or globbing.
//
// A non-empty s made only of the characters [A-Za-z0-9_./:=@%+,-] (and not
// starting with "=", which zsh expands) is returned as is, for readable logs.
// Anything else is wrapped in single quotes, each ' becoming '\”; the empty
// string becomes ”.
//
// A leading "-" is left as is: quotes would not stop the program reading it
// as an option (see the package comment; pass "--").
//
// Quote works on any byte string, including invalid UTF-8. A NUL byte cannot
// reach a remote program (argv strings end at NUL, and OpenSSH's sshd refuses
// an exec request that holds one); Quote still puts it inside quotes, so a
// consumer that cuts the string at the NUL sees an unterminated quote and
// fails rather than running a shorter command. [Command] refuses NUL outright.
func Quote(s string) string {
	if isBare(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2 + 3*strings.Count(s, "'"))
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			b.WriteString(`'\''`)
		} else {
			b.WriteByte(s[i])
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// Join quotes every argument with [Quote] and joins them with spaces. It is
// the one way code turns an argument list into a remote command line; use
// [Command] when any part comes from outside the program.
//
// The first word is the command name, which the shell reads specially: an
// unquoted "FOO=bar" there is a variable assignment and an unquoted "if" a
// reserved word. Worse, sshd runs `$SHELL -c LINE` without "--", so a line
// that starts with "-" or "+" is read as options by the remote shell itself
// (`sh -c "-x a"` fails with "Illegal option"). Join quotes such a first word,
// so it is always run as a command.
func Join(args ...string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		if i == 0 && isBare(a) && (a[0] == '-' || a[0] == '+' || strings.Contains(a, "=") || reserved[a]) {
			b.WriteString("'" + a + "'") // bare, so it holds no quote
			continue
		}
		b.WriteString(Quote(a))
	}
	return b.String()
}

// ErrInvalid is wrapped by the errors of [Command]: the command cannot be
// sent to a remote program.
var ErrInvalid = errors.New("invalid remote command")

// Command returns the remote command line that runs name with args, built by
// [Join]. It refuses, with an error wrapping [ErrInvalid], an empty name and
// any NUL byte, which no program can receive in its argv.
func Command(name string, args ...string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: remote command has an empty program name", ErrInvalid)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: remote program name %q contains a NUL byte, which cannot be passed to a program", ErrInvalid, name)
	}
	for i, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			return "", fmt.Errorf("%w: argument %d of remote command %q contains a NUL byte, which cannot be passed to a program: %q", ErrInvalid, i+1, name, a)
		}
	}
	return Join(append([]string{name}, args...)...), nil
}

// isBare reports whether s may appear unquoted: non-empty, only characters
// no POSIX shell treats specially, and not starting with "=" (zsh expands
// "=cmd" to the path of cmd).
func isBare(s string) bool {
	if s == "" || s[0] == '=' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("_./:=@%+,-", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// reserved holds the words that POSIX sh, bash, ksh and zsh read as syntax
// when they stand unquoted in command position and that isBare would let
// through unquoted.
var reserved = map[string]bool{
	"if": true, "then": true, "else": true, "elif": true, "fi": true,
	"case": true, "esac": true, "for": true, "select": true, "while": true,
	"until": true, "do": true, "done": true, "in": true, "function": true,
	"time": true, "coproc": true, "foreach": true, "end": true, "repeat": true,
	"nocorrect": true,
}
