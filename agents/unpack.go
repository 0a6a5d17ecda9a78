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
//   - tar unpacks into a fresh directory of the user's inside $2, taking no
//     owner from the archive (--no-same-owner) and applying the umask to
//     its modes (--no-same-permissions, which drops set-uid and set-gid);
//     any set-uid, set-gid or sticky bit left there is cleared;
//   - the tree is then copied into $2 (links kept as links, hard links as
//     hard links, files replaced), which leaves the directories that exist
//     in $2 as they are: some are root's (provisioning/, made with its
//     subdirectories), and tar would fail setting their mode or time;
//   - finally no file of the user's under $2 keeps a set-id or sticky bit.
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
stage=$(mktemp -d "$2/.dmgr-unpack.XXXXXX") || exit 1
trap 'rm -rf -- "$stage"' EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP
LC_ALL=C tar -xzf "$1" -C "$stage" --no-same-owner --no-same-permissions || exit 1
find "$stage" ! -type l -perm /7000 -exec chmod a-st -- {} + || exit 1
cp -R -P --preserve=links --remove-destination -- "$stage/." "$2/" || exit 1
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
