package remote

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/dmgr/dmgr/domain"
)

// File is one file to put on a machine with [Pool.Upload].
type File struct {
	Path string      // absolute path on the machine; its directory must exist
	Mode os.FileMode // permission bits, optionally with setuid, setgid, sticky
	// Owner, when set, is passed to chown: "user" or "user:group".
	Owner  string
	SHA256 string // hex SHA-256 of the content; required
	Size   int64  // length of the content; checked remotely with the checksum
	// Open returns the content; it is called only when the file must be
	// sent, and the reader is closed afterwards.
	Open func() (io.ReadCloser, error)
	// Sudo checks and writes the file as root (see RunOptions.Sudo).
	Sudo bool
}

// Upload makes f.Path hold f's content, mode and owner.
//
// When the file there already has the checksum, the mode and (if set) the
// owner, nothing is sent and skipped is true. Otherwise the content streams
// over the session's stdin into a temporary file next to f.Path, the
// machine checks its size and SHA-256, sets mode and owner, and renames it
// over f.Path (`mv -f -T`, atomic). f.Path is never seen half-written; on a
// checksum mismatch, a failure or ctx ending, the temporary file is removed
// and f.Path is unchanged.
func (p *Pool) Upload(ctx context.Context, t Target, f File) (skipped bool, err error) {
	skipped, err = p.upload(ctx, t, f)
	return skipped, t.wrap("upload "+f.Path, err)
}

func (p *Pool) upload(ctx context.Context, t Target, f File) (skipped bool, err error) {
	mode, err := f.check()
	if err != nil {
		return false, err
	}
	sum := strings.ToLower(f.SHA256)

	// 1. Is it there already?
	check, err := domain.ShellCommand("sh", "-c", statScript, "sh", f.Path)
	if err != nil {
		return false, err
	}
	line, prefix, err := sudoWrap(t, check, f.Sudo, "")
	if err != nil {
		return false, err
	}
	res, err := p.exec(ctx, t, job{line: line, stdin: withPrefix(prefix, nil), cancel: ssh.SIGKILL, sudo: f.Sudo})
	if err != nil {
		return false, fmt.Errorf("check the existing file: %w", err)
	}
	if res.ExitCode != 0 {
		return false, fmt.Errorf("check the existing file: exit %d: %s", res.ExitCode, strings.TrimSpace(res.Stderr))
	}
	if same(res.Stdout, sum, mode, f.Owner) {
		return true, nil
	}

	// 2. Send it.
	write, err := domain.ShellCommand("sh", "-c", writeScript, "sh", f.Path, sum, strconv.FormatInt(f.Size, 10), fmt.Sprintf("%o", mode), f.Owner,
		randomHex(8))
	if err != nil {
		return false, err
	}
	line, prefix, err = sudoWrap(t, write, f.Sudo, "")
	if err != nil {
		return false, err
	}
	body, err := f.Open()
	if err != nil {
		return false, fmt.Errorf("open the content: %w", err)
	}
	defer body.Close()
	// On cancellation the script gets SIGTERM, whose trap removes the
	// temporary file (SIGKILL would leave it behind).
	res, err = p.exec(ctx, t, job{line: line, stdin: withPrefix(prefix, body), cancel: ssh.SIGTERM, sudo: f.Sudo})
	if err != nil {
		return false, err
	}
	if res.ExitCode != 0 {
		return false, fmt.Errorf("exit %d: %s", res.ExitCode, strings.TrimSpace(res.Stderr))
	}
	return false, nil
}

// check validates f and returns its mode as chmod's octal number.
func (f File) check() (uint32, error) {
	switch {
	case !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/":
		return 0, fmt.Errorf("path must be absolute and clean (no trailing /, no . or .. parts)")
	case len(f.SHA256) != 64 || strings.Trim(strings.ToLower(f.SHA256), "0123456789abcdef") != "":
		return 0, fmt.Errorf("SHA256 %q is not 64 hex digits", f.SHA256)
	case f.Size < 0:
		return 0, fmt.Errorf("size %d is negative", f.Size)
	case f.Open == nil:
		return 0, fmt.Errorf("no content (File.Open is nil)")
	case strings.HasPrefix(f.Owner, "-"):
		return 0, fmt.Errorf("owner %q starts with '-'", f.Owner)
	}
	if extra := f.Mode &^ (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky); extra != 0 {
		return 0, fmt.Errorf("mode %v has bits other than permissions, setuid, setgid and sticky", f.Mode)
	}
	mode := uint32(f.Mode.Perm())
	if f.Mode&os.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if f.Mode&os.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if f.Mode&os.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode, nil
}

// statScript prints "SHA256 MODE USER UID GROUP GID" of the regular file $1,
// or nothing when there is none (or it cannot be read).
const statScript = `[ -f "$1" ] && [ ! -L "$1" ] || exit 0
sum=$(sha256sum < "$1") || exit 0
st=$(stat -c '%a %U %u %G %g' -- "$1") || exit 0
printf '%s %s\n' "${sum%% *}" "$st"`

// same reports whether statScript's output matches the wanted file.
func same(stat, sum string, mode uint32, owner string) bool {
	f := strings.Fields(stat)
	if len(f) != 6 || f[0] != sum {
		return false
	}
	if m, err := strconv.ParseUint(f[1], 8, 32); err != nil || uint32(m) != mode {
		return false
	}
	if owner == "" {
		return true
	}
	user, group, hasGroup := strings.Cut(owner, ":")
	if user != "" && user != f[2] && user != f[3] {
		return false
	}
	return !hasGroup || group == "" || group == f[4] || group == f[5]
}

// writeScript reads the content from stdin into a temporary file next to
// $1, checks its size ($3) and SHA-256 ($2), sets mode ($4) and owner ($5,
// optional), and renames it to $1. The EXIT trap removes the temporary file
// whenever the script does not get to the rename, including on SIGTERM,
// SIGINT and SIGHUP.
//
// The temporary name ($6 is random) is known and the traps are set before
// the file is created (exclusively, with noclobber), so a signal at any
// point leaves nothing behind.
const writeScript = `trap '' PIPE
umask 077
tmp="$(dirname -- "$1")/.$(basename -- "$1").dmgr-upload.$6"
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP
(set -C; : > "$tmp") || exit 1
cat > "$tmp" || exit 1
size=$(wc -c < "$tmp") || exit 1
size=$((size + 0))
if [ "$size" != "$3" ]; then echo "received $size bytes, want $3; $1 is unchanged" >&2; exit 1; fi
sum=$(sha256sum < "$tmp") || exit 1
sum=${sum%% *}
if [ "$sum" != "$2" ]; then echo "checksum mismatch: received sha256 $sum, want $2; $1 is unchanged" >&2; exit 1; fi
chmod -- "$4" "$tmp" || exit 1
if [ -n "$5" ]; then chown -- "$5" "$tmp" || exit 1; fi
mv -f -T -- "$tmp" "$1" || exit 1
trap - EXIT`
