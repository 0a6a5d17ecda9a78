// Package remote is the SSH side of dmgr's agents: it runs commands on
// target machines, uploads files to them and opens TCP connections through
// them, with golang.org/x/crypto/ssh.
//
// A [Pool] keeps one SSH connection per target (login user, address and
// credential) and multiplexes every caller's sessions on it. A per-host
// semaphore bounds the sessions running at once ([Options.MaxSessionsPerHost],
// below sshd's default MaxSessions of 10). Concurrent callers share one dial;
// a connection that dies (host restarted, network cut, keepalives
// unanswered) is dropped and the next call dials again.
//
// Safety rules the package keeps:
//
//   - Host keys are pinned. Every connection checks the server's key against
//     [Target.HostKey] (constant-time compare of the marshalled key) before
//     authenticating; a different key gives a [*HostKeyMismatchError] and
//     runs nothing. The client asks only for the pinned key's algorithm, so a
//     server that also has keys of other types is not mistaken for a changed
//     one. An empty pin is an error: there is no trust-on-first-use here;
//     [ScanHostKey] reads a key for an operator to confirm at registration.
//   - Secrets stay in memory. Passwords and private keys never appear in
//     errors or logs; [Target] formats (%v, %+v, %#v, JSON) without them.
//     A sudo password travels on the command's stdin, never in a command
//     line.
//   - Every value put into a command line goes through domain.ShellQuote (domain/shell.go).
//
// Remote machines need a POSIX login shell, sudo for [RunOptions.Sudo] and
// [RunOptions.AsUser], and GNU coreutils (sha256sum, stat -c, mktemp,
// mv -T) for [Pool.Upload].
package remote
