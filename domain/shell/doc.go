// Package shell builds the command lines dmgr sends to remote machines.
//
// An SSH "exec" request carries one string, and sshd hands it to the remote
// user's login shell as `$SHELL -c STRING`. Every byte of that string is
// therefore shell syntax, so the rule is:
//
//   - Nothing reaches a remote shell unquoted. Build command lines only with
//     [Command] (or [Join] for fixed, trusted argument lists); never with
//     fmt.Sprintf, string concatenation or strings.Join.
//   - [Quote] is the one quoting function. It uses POSIX single quotes, so no
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
package shell
