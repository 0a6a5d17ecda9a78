package agents

import (
	"context"
	"errors"

	"github.com/dmgr/dmgr/agents/remote"
)

// switchFilesScript replaces each target by a copy of its source, atomically:
// the copy is made next to the target (same directory, same file system),
// owned by the deploy user, with no set-uid, set-gid or sticky bit, then
// renamed over it. Arguments come in threes: source, target, owner.
// Running it twice gives the same files, so a redelivered step is harmless.
const switchFilesScript = `
while [ $# -ge 3 ]; do
  from=$1; to=$2; owner=$3; shift 3
  if [ ! -f "$from" ]; then echo "$from is missing on $(hostname): it should have been uploaded or backed up before" >&2; exit 1; fi
  tmp="$to.dmgr-switch"
  cp -p -- "$from" "$tmp" && chown -- "$owner:" "$tmp" && chmod a-st -- "$tmp" && mv -f -- "$tmp" "$to" || { rm -f -- "$tmp"; exit 1; }
  echo "$to <- $from"
done
`

// switchFiles runs a switch_files step: backups before a roll, the switch
// to the new files while the instance is stopped, the switch back on a
// rollback. A target to unpack (grafana.tar.gz) is unpacked after the
// switch, as the deploy user (see unpackScript).
func (r *run) switchFiles(ctx context.Context) error {
	sw := r.d.Step.Switches
	if len(sw) == 0 {
		return errors.New("switch step without files")
	}
	var args []string
	for _, s := range sw {
		args = append(args, s.From, s.To, s.Owner)
	}
	if err := r.sh(ctx, "switch files", remote.RunOptions{Sudo: true}, switchFilesScript, args...); err != nil {
		return err
	}
	for _, s := range sw {
		if s.UnpackInto != "" {
			if err := r.unpack(ctx, s.To, s.UnpackInto, s.Owner); err != nil {
				return err
			}
		}
	}
	return nil
}
