package agents

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/domain"
)

// The instance directories dmgr owns, on the host: a deploy's check probes
// every directory it will create (absent, empty, or marked by this very
// operation); the directories step creates them and writes the marker;
// destroy and scale-in remove a directory only when the marker that speaks
// for it names the cluster and the instance, and report every directory
// they leave. The rules are the domain's (domain.DirMark); the scripts
// only report what is on the host and act on what was decided.

// probeScript reports each argument directory in a block of lines:
//
//	dir PATH
//	kind absent|empty|full|notdir|symlink
//	real PATH-WITH-LINKS-RESOLVED
//	owner USER         (of PATH/.dmgr-owned, a regular file, not a link)
//	marker LINE        (each line of it)
//
// and "end" after the last one, so that a cut-off answer is noticed.
const probeScript = `
for d; do
  printf 'dir %s\n' "$d"
  if [ -L "$d" ]; then k=symlink
  elif [ ! -e "$d" ]; then k=absent
  elif [ ! -d "$d" ]; then k=notdir
  elif [ -z "$(ls -A -- "$d" | head -n 1)" ]; then k=empty
  else k=full; fi
  printf 'kind %s\n' "$k"
  r=$(realpath -m -- "$d") || { echo "cannot resolve $d" >&2; exit 1; }
  printf 'real %s\n' "$r"
  m=$d/` + domain.MarkerFile + `
  if [ "$k" = full ] && [ -f "$m" ] && [ ! -L "$m" ]; then
    printf 'owner %s\n' "$(stat -c %U -- "$m")"
    head -c 4096 -- "$m" | sed 's/^/marker /'; echo
  fi
done
echo end
`

// probeTail bounds the probe's answer (a block is a few hundred bytes).
const probeTail = 1 << 20

// probeDirs asks the host about dirs.
func (r *run) probeDirs(ctx context.Context, dirs []string) (map[string]domain.DirProbe, error) {
	out, err := r.capture(ctx, "inspect directories", remote.RunOptions{Sudo: true, TailBytes: probeTail}, probeScript, dirs...)
	if err != nil {
		return nil, err
	}
	probes, err := parseProbe(out)
	if err != nil {
		return nil, fmt.Errorf("inspect directories: %w", err)
	}
	for _, d := range dirs {
		if _, ok := probes[d]; !ok {
			return nil, fmt.Errorf("inspect directories: the host did not report %s", d)
		}
	}
	return probes, nil
}

// parseProbe reads probeScript's answer.
func parseProbe(out string) (map[string]domain.DirProbe, error) {
	probes := map[string]domain.DirProbe{}
	var cur *domain.DirProbe
	var marker strings.Builder
	flush := func() {
		if cur == nil {
			return
		}
		if marker.Len() > 0 {
			m := domain.ParseMarker(marker.String())
			cur.Marker = &m
		}
		probes[cur.Path] = *cur
		cur = nil
		marker.Reset()
	}
	for _, line := range strings.Split(out, "\n") {
		if line == "" {
			continue
		}
		key, val, _ := strings.Cut(line, " ")
		switch {
		case key == "end" && val == "":
			flush()
			return probes, nil
		case key == "dir":
			flush()
			cur = &domain.DirProbe{Path: val}
		case cur == nil:
			return nil, fmt.Errorf("unexpected answer line %q", line)
		case key == "kind":
			cur.Kind = val
		case key == "real":
			cur.Real = val
		case key == "owner":
			cur.MarkerOwner = val
		case key == "marker":
			marker.WriteString(val + "\n")
		default:
			return nil, fmt.Errorf("unexpected answer line %q", line)
		}
	}
	return nil, errors.New("the answer was cut off")
}

// checkDirs refuses a deploy into directories it must not take: every
// problem, naming the host and the directory.
func (r *run) checkDirs(ctx context.Context) error {
	m := r.d.Step.Mark
	if m == nil || len(m.Dirs) == 0 {
		return nil // a plan made before dmgr marked its directories
	}
	probes, err := r.probeDirs(ctx, m.Dirs)
	if err != nil {
		return err
	}
	var problems []string
	for _, d := range m.Dirs {
		p := probes[d]
		if reason := m.DeployProblem(p, r.d.Step.User); reason != "" {
			problems = append(problems, reason)
			continue
		}
		r.out.stdout.add(fmt.Sprintf("directory %s: %s", d, map[string]string{
			domain.DirAbsent: "absent", domain.DirEmpty: "empty", domain.DirFull: "created by this operation already"}[p.Kind]))
	}
	if len(problems) > 0 {
		return fmt.Errorf("on %s: %s", r.d.Step.Host, strings.Join(problems, "; "))
	}
	return nil
}

// makeDirsScript creates the instance's directories (dir=PATH) and writes
// the marker (its content in $2) into those that carry it (mark=PATH). A
// marked directory is root's while its marker is written, so that the
// deploy user cannot slip a link in; an existing marker must be root's or
// the deploy user's and name the cluster and instance (a retry). Then
// every directory is given to the deploy user.
const makeDirsScript = `
user=$1 content=$2 cluster=$3 instance=$4; shift 4
umask 022
for a; do
  case $a in dir=*) mkdir -p -- "${a#dir=}" || exit 1;; esac
done
for a; do
  case $a in mark=*)
    d=${a#mark=}; m=$d/` + domain.MarkerFile + `
    if [ -L "$d" ] || [ ! -d "$d" ]; then echo "$d is not a directory" >&2; exit 1; fi
    chown -- 0:0 "$d" && chmod -- go-w "$d" || exit 1
    if [ -e "$m" ] || [ -L "$m" ]; then
      o=$(stat -c %U -- "$m")
      if [ -f "$m" ] && [ ! -L "$m" ] && { [ "$o" = root ] || [ "$o" = "$user" ]; } &&
        grep -qxF -- "cluster=$cluster" "$m" && grep -qxF -- "instance=$instance" "$m"; then
        echo "$d: marked already"; continue
      fi
      echo "$d holds a marker that is not this instance's: leaving it alone" >&2; exit 1
    fi
    printf '%s' "$content" > "$m" && chmod -- 0644 "$m" || exit 1
    echo "$d: marked";;
  esac
done
for a; do
  case $a in dir=*) chown -- "$user:" "${a#dir=}" || exit 1;; esac
done
`

// makeDirs creates the instance's directories, marks them as the
// cluster's and gives them to the deploy user.
func (r *run) makeDirs(ctx context.Context) error {
	s := r.d.Step
	mark := domain.DirMark{}
	if s.Mark != nil {
		mark = *s.Mark
	}
	args := []string{s.User, mark.MarkerContent(s.Instance), mark.Cluster, s.Instance}
	for _, d := range s.Dirs {
		args = append(args, "dir="+d)
	}
	for _, d := range mark.Dirs {
		args = append(args, "mark="+d)
	}
	return r.sh(ctx, "create directories", remote.RunOptions{Sudo: true}, makeDirsScript, args...)
}

// removeDirsScript removes each directory of the pairs (DIR, the directory
// whose marker speaks for it) once more checking, just before, that the
// marker is root's or the deploy user's and names the cluster and the
// instance — or, for an instance taken over from tiup-dm (imported=1),
// that there is still no marker at all; it reports what it removed and
// what it left.
const removeDirsScript = `
cluster=$1 instance=$2 user=$3 imported=$4; shift 4
while [ $# -ge 2 ]; do
  d=$1 m=$2; shift 2
  case "$d" in /?*/?*) ;; *) echo "left $d: not an absolute path two levels deep"; continue;; esac
  mk=$m/` + domain.MarkerFile + `
  if [ "$imported" = 1 ] && [ ! -L "$d" ] && [ ! -L "$m" ] && [ ! -e "$mk" ] && [ ! -L "$mk" ]; then
    rm -rf -- "$d" || exit 1
    echo "removed $d (taken over from tiup-dm: no marker)"
    continue
  fi
  o=$(stat -c %U -- "$mk" 2>/dev/null)
  if [ -L "$d" ] || [ -L "$m" ] || [ -L "$mk" ] || [ ! -f "$mk" ] || { [ "$o" != root ] && [ "$o" != "$user" ]; } ||
    ! grep -qxF -- "cluster=$cluster" "$mk" || ! grep -qxF -- "instance=$instance" "$mk"; then
    echo "left $d: its marker changed while it was being removed"; continue
  fi
  rm -rf -- "$d" || exit 1
  echo "removed $d"
done
`

// removeDirs removes the instance's directories that carry its marker,
// and its systemd unit.
func (r *run) removeDirs(ctx context.Context) error {
	if err := r.removeOwnedDirs(ctx); err != nil {
		return err
	}
	if svc := r.d.Step.Service; svc != nil && svc.UnitFile != "" {
		return r.sh(ctx, "remove unit "+svc.Name, remote.RunOptions{Sudo: true},
			`systemctl disable "$1" 2>/dev/null; rm -f -- "$2"; systemctl daemon-reload 2>/dev/null; exit 0`, svc.Name+".service", svc.UnitFile)
	}
	return nil
}

// removeOwnedDirs removes what the domain's rules let it remove of the
// step's directories, and reports every directory it leaves.
func (r *run) removeOwnedDirs(ctx context.Context) error {
	s := r.d.Step
	if len(s.Dirs) == 0 {
		return nil
	}
	if s.Mark == nil {
		for _, d := range s.Dirs {
			r.out.stdout.add("left " + d + ": the plan names no owner (it was made before dmgr marked its directories); remove it by hand")
		}
		return nil
	}
	m := *s.Mark
	ask := append([]string{}, s.Dirs...)
	for _, d := range s.Dirs {
		if md := m.MarkDirFor(d); !slices.Contains(ask, md) {
			ask = append(ask, md)
		}
	}
	probes, err := r.probeDirs(ctx, ask)
	if err != nil {
		return err
	}
	imported := "0"
	if m.Imported {
		imported = "1"
	}
	args := []string{m.Cluster, s.Instance, s.User, imported}
	for _, d := range s.Dirs {
		p, md := probes[d], m.MarkDirFor(d)
		if p.Kind == domain.DirAbsent {
			r.out.stdout.add(d + ": already gone")
			continue
		}
		if reason := m.RemovalProblem(p, probes[md], s.Instance, s.User); reason != "" {
			r.out.stdout.add("left " + d + ": " + reason)
			r.log.Warn().Str("dir", d).Str("reason", reason).Msg("directory left in place")
			continue
		}
		args = append(args, d, md)
	}
	if len(args) == 4 {
		return nil
	}
	return r.sh(ctx, "remove directories", remote.RunOptions{Sudo: true}, removeDirsScript, args...)
}

// forceRemove is a forced destroy's one try at an instance: stop it, then
// remove its directories that carry its marker. The step's deadline
// (TimeoutSec) bounds the whole try.
func (r *run) forceRemove(ctx context.Context) error {
	if err := r.stop(ctx); err != nil {
		return err
	}
	return r.removeDirs(ctx)
}

// capture runs a constant script with quoted positional arguments, as sh
// does, and returns its standard output instead of keeping it in the
// step's output.
func (r *run) capture(ctx context.Context, what string, opts remote.RunOptions, script string, args ...string) (string, error) {
	var stdout string
	err := r.shWith(ctx, what, opts, script, args, func(res remote.Result) { stdout = res.Stdout })
	return stdout, err
}
