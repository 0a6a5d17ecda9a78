package agents

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/domain"
)

// verifyInstanceScript checks, reading only, that an instance taken over
// from tiup-dm is what the topology says: its directories, binary, config
// and run script are there, and its process runs — the pid file names a
// live process working in the deploy directory (service_manager none), or
// its systemd unit is active. It writes nothing, and reports every problem
// on one line of stderr. Arguments: deploy binary config run-script
// manager pid-file unit, then the instance's directories.
const verifyInstanceScript = `
deploy=$1 bin=$2 conf=$3 run=$4 manager=$5 pidfile=$6 unit=$7; shift 7
problems=
problem() { problems="${problems:+$problems; }$*"; }
if [ ! -d "$deploy" ]; then
  problem "its deploy directory $deploy is missing"
else
  for d; do [ -d "$d" ] || problem "directory $d is missing"; done
  if [ ! -f "$bin" ]; then problem "its binary $bin is missing"
  elif [ ! -x "$bin" ]; then problem "its binary $bin is not executable"; fi
  if [ -n "$conf" ] && [ ! -f "$conf" ]; then problem "its config $conf is missing"; fi
  if [ ! -f "$run" ]; then problem "its run script $run is missing"; fi
fi
case $manager in
none)
  if [ ! -f "$pidfile" ]; then
    problem "it does not run under a pid file: $pidfile is missing (if systemd runs it, import with service_manager systemd)"
  else
    pid=$(head -c 32 -- "$pidfile" | tr -d ' \n')
    case $pid in
    ''|*[!0-9]*) problem "its pid file $pidfile holds no process id";;
    *)
      if ! kill -0 "$pid" 2>/dev/null; then
        problem "it does not run: pid $pid (from $pidfile) is not a live process"
      else
        cwd=$(readlink -- "/proc/$pid/cwd" 2>/dev/null || true)
        want=$(realpath -m -- "$deploy")
        if [ -n "$cwd" ] && [ "$cwd" != "$want" ]; then
          problem "pid $pid (from $pidfile) works in $cwd, not in its deploy directory $want: another process"
        else
          echo "running as pid $pid"
        fi
      fi;;
    esac
  fi;;
systemd)
  if state=$(systemctl is-active -- "$unit" 2>&1); then echo "$unit is $state"
  else problem "its systemd unit $unit is not active (${state:-unknown})"; fi;;
*) problem "unknown service manager $manager";;
esac
if [ -n "$problems" ]; then echo "$problems" >&2; exit 1; fi
`

// verifyInstance checks an instance that an import takes over: the files
// and process on its host (verifyInstanceScript), then that it answers its
// health route — masters and workers with the cluster's version. It reads
// only; nothing is started, stopped or written.
func (r *run) verifyInstance(ctx context.Context) error {
	s := r.d.Step
	svc, v := s.Service, s.Verify
	if svc == nil || v == nil {
		return errors.New("verify step without a service or what to verify")
	}
	what := fmt.Sprintf("%s %s", s.Role, s.Instance)
	args := []string{svc.DeployDir, v.Binary, v.Config, svc.RunScript, svc.Manager, svc.PIDFile, svc.Name + ".service"}
	if err := r.sh(ctx, "check "+what, remote.RunOptions{Sudo: true}, verifyInstanceScript, append(args, s.Dirs...)...); err != nil {
		var failed *commandError
		if errors.As(err, &failed) {
			return fmt.Errorf("%s: %s", what, lastLine(failed.stderr))
		}
		return err
	}
	body, err := r.healthBody(ctx, svc, time.Duration(svc.HealthTimeoutSec)*time.Second, what)
	if err != nil {
		return err
	}
	if v.Version == "" {
		return nil
	}
	got := releaseVersion(body)
	if got != v.Version {
		return fmt.Errorf("%s runs version %q, but the cluster's version is %s: import it with the dm_version it runs", what, got, v.Version)
	}
	r.out.stdout.add(fmt.Sprintf("%s runs %s", what, got))
	return nil
}

// healthBody polls the instance's health route until it answers 200, and
// returns the answer; it starts nothing (an instance that does not answer
// within timeout fails the step).
func (r *run) healthBody(ctx context.Context, svc *domain.ServiceSpec, timeout time.Duration, what string) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	client := r.httpClient()
	for {
		body, err := r.get(ctx, client, svc.HealthAddr, svc.HealthPath)
		if err == nil {
			r.out.stdout.add(fmt.Sprintf("%s answers GET %s: %s", what, svc.HealthPath, firstLine(body)))
			return body, nil
		}
		var mismatch *remote.HostKeyMismatchError
		if errors.As(err, &mismatch) {
			return nil, err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("%s does not answer GET %s on %s within %s: %w", what, svc.HealthPath, svc.HealthAddr, timeout, err)
		}
		sleep(ctx, 500*time.Millisecond)
	}
}

// releaseVersion reads "Release Version: v8.1.0" from a DM /status answer.
func releaseVersion(body []byte) string {
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Release Version:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}
