package domain

import (
	"errors"
	"fmt"
	"strings"
)

// Shell quoting builds the command lines dmgr sends to remote machines.
//
// An SSH "exec" request carries one string, and sshd hands it to the remote
// user's login shell as `$SHELL -c STRING`. Every byte of that string is
// therefore shell syntax, so the rule is:
//
//   - Nothing reaches a remote shell unquoted. Build command lines only with
//     [ShellCommand] (or [ShellJoin] for fixed, trusted argument lists); never with
//     fmt.Sprintf, string concatenation or strings.Join.
//   - [ShellQuote] is the one quoting function. It uses POSIX single quotes, so no
//     expansion of any kind ($, `, \, *, ~, !, newlines) happens inside.
//   - Quoting protects the shell, not the program: an argument "-rf" or
//     "--config=/etc/shadow" still reaches the program as an option. Put "--"
//     before operands that come from users or configuration wherever the tool
//     supports it (rm, mkdir, cp, mv, chown, tar ...), and validate values
//     (absolute paths, no leading "-") before they get here.
//
// Quote targets POSIX-family shells (sh, dash, bash, ksh, zsh). csh/tcsh and
// fish read single quotes differently (csh rejects a newline inside them and
// expands "!" history; fish treats "\\" and "\'" as escapes inside them), so
// the user dmgr logs in as must have a POSIX login shell.
//
// It is part of domain because the plan's run scripts are rendered here and
// domain imports nothing of the project; agents build their command lines
// with the same functions.

// ShellQuote returns s as one word for a POSIX shell: the shell turns the result
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
// fails rather than running a shorter command. [ShellCommand] refuses NUL outright.
func ShellQuote(s string) string {
	if isBareWord(s) {
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

// ShellJoin quotes every argument with [ShellQuote] and joins them with spaces. It is
// the one way code turns an argument list into a remote command line; use
// [ShellCommand] when any part comes from outside the program.
//
// The first word is the command name, which the shell reads specially: an
// unquoted "FOO=bar" there is a variable assignment and an unquoted "if" a
// shellReserved word. Worse, sshd runs `$SHELL -c LINE` without "--", so a line
// that starts with "-" or "+" is read as options by the remote shell itself
// (`sh -c "-x a"` fails with "Illegal option"). Join quotes such a first word,
// so it is always run as a command.
func ShellJoin(args ...string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		if i == 0 && isBareWord(a) && (a[0] == '-' || a[0] == '+' || strings.Contains(a, "=") || shellReserved[a]) {
			b.WriteString("'" + a + "'") // bare, so it holds no quote
			continue
		}
		b.WriteString(ShellQuote(a))
	}
	return b.String()
}

// ErrInvalidShellCommand is wrapped by the errors of [ShellCommand]: the command cannot be
// sent to a remote program.
var ErrInvalidShellCommand = errors.New("invalid remote command")

// ShellCommand returns the remote command line that runs name with args, built by
// [ShellJoin]. It refuses, with an error wrapping [ErrInvalidShellCommand], an empty name and
// any NUL byte, which no program can receive in its argv.
func ShellCommand(name string, args ...string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: remote command has an empty program name", ErrInvalidShellCommand)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: remote program name %q contains a NUL byte, which cannot be passed to a program", ErrInvalidShellCommand, name)
	}
	for i, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			return "", fmt.Errorf("%w: argument %d of remote command %q contains a NUL byte, which cannot be passed to a program: %q", ErrInvalidShellCommand, i+1, name, a)
		}
	}
	return ShellJoin(append([]string{name}, args...)...), nil
}

// isBareWord reports whether s may appear unquoted: non-empty, only characters
// no POSIX shell treats specially, and not starting with "=" (zsh expands
// "=cmd" to the path of cmd).
func isBareWord(s string) bool {
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

// shellReserved holds the words that POSIX sh, bash, ksh and zsh read as syntax
// when they stand unquoted in command position and that isBareWord would let
// through unquoted.
var shellReserved = map[string]bool{
	"if": true, "then": true, "else": true, "elif": true, "fi": true,
	"case": true, "esac": true, "for": true, "select": true, "while": true,
	"until": true, "do": true, "done": true, "in": true, "function": true,
	"time": true, "coproc": true, "foreach": true, "end": true, "repeat": true,
	"nocorrect": true,
}
