package agents

import (
	"context"
	"fmt"
	"strings"

	"github.com/dmgr/dmgr/agents/remote"
)

// unpackScript unpacks the gzip-compressed tar archive $1 into the
// directory $2 (grafana.tar.gz into grafana's deploy directory). It runs as
// the deploy user, so that the archive can write only where that user can,
// and through no link planted in $2 anywhere else; and it keeps nothing of
// the archive's owners or special modes:
//   - an archive holding anything but regular files, directories and links
//     (devices, FIFOs, sockets, …: the first letter of tar's long listing)
//     is refused before anything is written;
//   - tar takes no owner from the archive (--no-same-owner) and applies the
//     umask to its modes (--no-same-permissions, which drops set-uid and
//     set-gid), and leaves existing directories as they are;
//   - then every set-uid, set-gid or sticky bit left under $2 on a file of
//     this user is cleared.
//
// The package store refused such archives at upload already; this is the
// host's own defence, for whatever reached it anyway.
const unpackScript = `
umask 022
cd / || exit 1
if [ ! -f "$1" ] || [ -L "$1" ]; then echo "$1 is not a regular file" >&2; exit 1; fi
if [ ! -d "$2" ] || [ -L "$2" ]; then echo "$2 is not a directory" >&2; exit 1; fi
list=$(LC_ALL=C tar -tvzf "$1") || { echo "$1 is not a readable tar.gz archive; nothing unpacked" >&2; exit 1; }
bad=$(printf '%s\n' "$list" | grep -v '^[-dlh]' | head -n 1)
if [ -n "$bad" ]; then
  echo "$1 holds an entry that is not a regular file, directory or link; nothing unpacked: $bad" >&2; exit 1
fi
LC_ALL=C tar -xzf "$1" -C "$2" --no-same-owner --no-same-permissions --no-overwrite-dir || exit 1
find "$2" -xdev -user "$(id -u)" ! -type l -perm /7000 -exec chmod a-st -- {} + || exit 1
echo "$1 unpacked into $2 as $(id -un)"
`

// unpack unpacks archive into dir on the target, as owner ("user" or
// "user:group": the user part), the deploy user that owns dir.
func (r *run) unpack(ctx context.Context, archive, dir, owner string) error {
	user, _, _ := strings.Cut(owner, ":")
	if user == "" {
		return fmt.Errorf("unpack %s: no deploy user to unpack it as; archives are unpacked as the deploy user", archive)
	}
	return r.sh(ctx, "unpack "+archive, remote.RunOptions{AsUser: user}, unpackScript, archive, dir)
}
