package agents

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/domain"
)

// tailBytes bounds the stdout and stderr kept of a step.
const tailBytes = 4096

// outcome is how a step went.
type outcome struct {
	err      error // nil: the step succeeded
	exitCode int
	stdout   tail
	stderr   tail
}

// tail keeps the last tailBytes written to it.
type tail struct{ b []byte }

func (t *tail) add(s string) {
	if s == "" {
		return
	}
	t.b = append(t.b, s...)
	if !strings.HasSuffix(s, "\n") {
		t.b = append(t.b, '\n')
	}
	if len(t.b) > tailBytes {
		t.b = t.b[len(t.b)-tailBytes:]
	}
}

func (t *tail) String() string { return string(t.b) }

// run is one step being executed on its target.
type run struct {
	a      *Agent
	log    zerolog.Logger
	d      order // the step as the store ordered it (verify.go)
	target remote.Target
	out    *outcome
}

// execute runs a verified step on its machine; the error of the outcome
// names the host and step.
func (a *Agent) execute(ctx context.Context, log zerolog.Logger, o order) outcome {
	var out outcome
	if o.Step.Kind == domain.StepNoop && o.Step.Host == "" {
		return out
	}
	r := &run{a: a, log: log, d: o, target: o.target, out: &out}
	if err := r.dispatch(ctx); err != nil {
		out.err = fmt.Errorf("step %s on %s: %w", o.Step.ID, o.Step.Host, err)
	}
	return out
}

func (r *run) dispatch(ctx context.Context) error {
	s := r.d.Step
	if s.TimeoutSec > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(s.TimeoutSec)*time.Second)
		defer cancel()
	}
	switch s.Kind {
	case domain.StepCheckHost:
		return r.checkHost(ctx)
	case domain.StepEnsureUser:
		return r.ensureUser(ctx)
	case domain.StepMakeDirs:
		return r.makeDirs(ctx)
	case domain.StepCopyFiles:
		return r.copyFiles(ctx)
	case domain.StepWriteFiles:
		return r.writeFiles(ctx)
	case domain.StepStart:
		return r.start(ctx)
	case domain.StepCheckCluster:
		return r.checkCluster(ctx)
	case domain.StepStop:
		return r.stop(ctx)
	case domain.StepRemoveDirs:
		return r.removeDirs(ctx)
	case domain.StepForceRemove:
		return r.forceRemove(ctx)
	case domain.StepSwitchFiles:
		return r.switchFiles(ctx)
	case domain.StepOffline:
		return r.offline(ctx)
	case domain.StepVerifyInstance:
		return r.verifyInstance(ctx)
	case domain.StepNoop:
		return r.sh(ctx, "noop", remote.RunOptions{}, "true")
	}
	return fmt.Errorf("unknown step kind %q: this agent is older than the coordinator", s.Kind)
}

// retry runs f, trying again after connection failures (not after a host
// key mismatch or a command that ran and failed, nor in a best-effort
// step, which tries once).
func (r *run) retry(ctx context.Context, what string, f func() error) error {
	backoff := r.a.cfg.RetryBackoff
	var err error
	for try := 0; ; try++ {
		err = f()
		var mismatch *remote.HostKeyMismatchError
		var failed *commandError
		if err == nil || ctx.Err() != nil || errors.As(err, &mismatch) || errors.As(err, &failed) || try >= r.a.cfg.Retries || r.d.Step.BestEffort {
			break
		}
		r.log.Warn().Err(err).Int("try", try+1).Msg(what + " failed; retrying")
		sleep(ctx, backoff)
		backoff *= 2
	}
	if err != nil && ctx.Err() == nil && !r.d.Step.BestEffort {
		var failed *commandError
		if !errors.As(err, &failed) {
			return fmt.Errorf("%s (after %d tries): %w", what, r.a.cfg.Retries+1, err)
		}
	}
	return err
}

// commandError is a remote command that ran and exited non-zero.
type commandError struct {
	what     string
	exitCode int
	stderr   string
}

func (e *commandError) Error() string {
	msg := strings.TrimSpace(e.stderr)
	if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
		msg = msg[i+1:]
	}
	if msg == "" {
		return fmt.Sprintf("%s: exit code %d", e.what, e.exitCode)
	}
	return fmt.Sprintf("%s: exit code %d: %s", e.what, e.exitCode, msg)
}

// sh runs a constant script with quoted positional arguments on the
// target, retried on connection failures; a non-zero exit is an error.
func (r *run) sh(ctx context.Context, what string, opts remote.RunOptions, script string, args ...string) error {
	return r.shWith(ctx, what, opts, script, args, func(res remote.Result) { r.out.stdout.add(res.Stdout) })
}

// shWith is sh, handing each run's result to stdout.
func (r *run) shWith(ctx context.Context, what string, opts remote.RunOptions, script string, args []string, stdout func(remote.Result)) error {
	cmd := domain.ShellJoin(append([]string{"sh", "-c", script, "sh"}, args...)...)
	return r.retry(ctx, what, func() error {
		res, err := r.a.cfg.Remote.Run(ctx, r.target, cmd, opts)
		if err != nil {
			return err
		}
		stdout(res)
		r.out.stderr.add(res.Stderr)
		if res.ExitCode != 0 {
			r.out.exitCode = res.ExitCode
			return &commandError{what: what, exitCode: res.ExitCode, stderr: res.Stderr}
		}
		return nil
	})
}

const checkHostScript = `
fail=0
listening=$(awk 'NR>1 && $4=="0A" {n=split($2,a,":"); print a[n]}' /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u)
for arg; do
  case "$arg" in
  port=*)
    v=${arg#port=}; port=${v%%=*}; pidfile=${v#*=}
    hex=$(printf '%04X' "$port")
    if printf '%s\n' "$listening" | grep -qx "$hex"; then
      if [ -n "$pidfile" ] && [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "port $port: held by this instance (pid $(cat "$pidfile"))"
      else
        echo "port $port is already in use on $(hostname)" >&2; fail=1
      fi
    fi;;
  dir=*)
    d=${arg#dir=}
    while [ ! -e "$d" ]; do d=$(dirname "$d"); done
    if [ ! -d "$d" ] || [ ! -w "$d" ]; then
      echo "directory ${arg#dir=} cannot be created: $d is not a writable directory" >&2; fail=1
    fi;;
  esac
done
for tool in sha256sum flock setsid tar awk realpath stat; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$tool is missing on $(hostname)" >&2; fail=1; }
done
exit $fail
`

// checkHost: reachable, sudo works, the directories to create are absent
// or empty (or this operation's, on a retry) and can be created, ports are
// free (or held by the instance itself, on a retry).
func (r *run) checkHost(ctx context.Context) error {
	var args []string
	for _, p := range r.d.Step.Ports {
		args = append(args, "port="+strconv.Itoa(p.Port)+"="+p.PIDFile)
	}
	for _, d := range r.d.Step.Dirs {
		args = append(args, "dir="+d)
	}
	if err := r.sh(ctx, "sudo", remote.RunOptions{Sudo: true}, "true"); err != nil {
		return fmt.Errorf("user %s cannot run sudo without a prompt: %w", r.target.User, err)
	}
	if err := r.sh(ctx, "host check", remote.RunOptions{Sudo: true}, checkHostScript, args...); err != nil {
		return err
	}
	return r.checkDirs(ctx)
}

// ensureUserScript creates the user unless it exists. Deploys of several
// clusters to one host run it at the same time: when useradd fails because
// another one created the user (or held the passwd lock) meanwhile, the
// user that exists now is what was asked for.
const ensureUserScript = `
for try in 1 2 3; do
  if id -u "$1" >/dev/null 2>&1; then echo "user $1 exists"; exit 0; fi
  useradd -m -s /bin/bash "$1" && { echo "user $1 created"; exit 0; }
  rc=$?
  sleep 1
done
if id -u "$1" >/dev/null 2>&1; then echo "user $1 exists"; exit 0; fi
exit $rc
`

func (r *run) ensureUser(ctx context.Context) error {
	return r.sh(ctx, "create user "+r.d.Step.User, remote.RunOptions{Sudo: true}, ensureUserScript, r.d.Step.User)
}

// copyFiles uploads the component's files from the package; an upload
// whose checksum already matches is skipped. An archive to unpack
// (grafana.tar.gz) is unpacked as the deploy user (see unpackScript).
func (r *run) copyFiles(ctx context.Context) error {
	for _, c := range r.d.Step.Copies {
		skipped, err := r.copyFile(ctx, c)
		if err != nil {
			return err
		}
		r.out.stdout.add(fmt.Sprintf("%s: %s", c.Dst, map[bool]string{true: "unchanged", false: "uploaded"}[skipped]))
		if c.UnpackInto != "" {
			if err := r.unpack(ctx, c.Dst, c.UnpackInto, c.Owner); err != nil {
				return err
			}
		}
	}
	return nil
}

// copyFile uploads one package file from the agent's cache (cache.go),
// which reads the package from the object store only when it does not
// hold it: transient read errors are retried inside (pkgstore.Fetch),
// with a deadline that grows with the package's size.
func (r *run) copyFile(ctx context.Context, c domain.CopySpec) (skipped bool, err error) {
	local, err := r.a.files.open(ctx, r.log, c)
	if err != nil {
		return false, err
	}
	defer local.close()
	// Permission bits only: never a set-uid, set-gid or sticky file from a
	// package, whatever the step says.
	f := remote.File{Path: c.Dst, Mode: os.FileMode(c.Mode) & os.ModePerm, Owner: c.Owner, SHA256: c.SHA256, Size: c.Size, Sudo: true,
		Open: func() (io.ReadCloser, error) { return local.reader(), nil }}
	err = r.retry(ctx, "upload "+c.Dst, func() error {
		var err error
		skipped, err = r.a.cfg.Remote.Upload(ctx, r.target, f)
		return err
	})
	return skipped, err
}

// writeFiles writes the rendered files; each is replaced atomically, and
// left alone when its content is already right.
func (r *run) writeFiles(ctx context.Context) error {
	for _, fs := range r.d.Step.Files {
		content := []byte(fs.Content)
		sum := sha256.Sum256(content)
		f := remote.File{Path: fs.Path, Mode: os.FileMode(fs.Mode), Owner: fs.Owner, SHA256: hex.EncodeToString(sum[:]),
			Size: int64(len(content)), Sudo: true,
			Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(fs.Content)), nil }}
		var skipped bool
		if err := r.retry(ctx, "write "+fs.Path, func() error {
			var err error
			skipped, err = r.a.cfg.Remote.Upload(ctx, r.target, f)
			return err
		}); err != nil {
			return err
		}
		r.out.stdout.add(fmt.Sprintf("%s: %s", fs.Path, map[bool]string{true: "unchanged", false: "written"}[skipped]))
	}
	return nil
}

// startScript starts an instance unless its pid file names a live
// process. The lock makes two agents running the same step (a redelivery
// racing a slow one) start it once.
const startScript = `
pidfile=$1; script=$2; dir=$3
exec 9>>"$pidfile.lock"
flock -w 60 9 || { echo "could not lock $pidfile.lock" >&2; exit 1; }
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "already running as pid $(cat "$pidfile")"; exit 0
fi
cd "$dir" || exit 1
setsid nohup /bin/bash "$script" </dev/null >/dev/null 2>&1 9>&- &
echo $! > "$pidfile"
echo "started as pid $!"
`

const startSystemdScript = `
systemctl daemon-reload && systemctl enable "$1" && systemctl start "$1"
`

// start starts the instance unless it runs, then waits until it answers
// its health route.
func (r *run) start(ctx context.Context) error {
	svc := r.d.Step.Service
	if svc == nil {
		return errors.New("start step without a service")
	}
	var err error
	var revive func(context.Context) error
	if svc.Manager == domain.ServiceManagerNone {
		err = r.sh(ctx, "start "+svc.Name, remote.RunOptions{AsUser: svc.User}, startScript, svc.PIDFile, svc.RunScript, svc.DeployDir)
		revive = r.reviver(svc)
	} else {
		err = r.sh(ctx, "start "+svc.Name, remote.RunOptions{Sudo: true}, startSystemdScript, svc.Name+".service")
	}
	if err != nil {
		return err
	}
	return r.waitHealthy(ctx, svc.HealthAddr, svc.HealthPath, time.Duration(svc.HealthTimeoutSec)*time.Second,
		fmt.Sprintf("%s %s", r.d.Step.Role, r.d.Step.Instance), revive)
}

// restartDelay is how long an instance run without a service manager may
// be gone before the start step starts it again (systemd's units restart
// theirs after RestartSec=15s).
const restartDelay = 5 * time.Second

// reviver returns what waitHealthy calls between polls for an
// instance run from its pid file (service_manager none): at most every
// restartDelay, the start script again, which starts the instance only
// when its process is gone. An instance that exits before it is healthy
// is started again, as its systemd unit (Restart=always) would have it:
// a dm-master that joins a cluster whose etcd was formed moments ago is
// refused ("etcdserver: unhealthy cluster") and exits; a few seconds later
// the same join succeeds.
func (r *run) reviver(svc *domain.ServiceSpec) func(context.Context) error {
	last := time.Now()
	return func(ctx context.Context) error {
		if time.Since(last) < restartDelay {
			return nil
		}
		last = time.Now()
		var out string
		err := r.shWith(ctx, "start "+svc.Name+" again", remote.RunOptions{AsUser: svc.User}, startScript,
			[]string{svc.PIDFile, svc.RunScript, svc.DeployDir}, func(res remote.Result) { out = strings.TrimSpace(res.Stdout) })
		if err == nil && strings.HasPrefix(out, "started") {
			r.log.Warn().Str("service", svc.Name).Str("output", out).Msg("instance exited before it was healthy; started again")
			r.out.stdout.add(fmt.Sprintf("%s exited before it was healthy; started again, as a service manager would: %s", svc.Name, out))
		}
		return err
	}
}

// httpClient reaches host-local addresses through the SSH connection.
func (r *run) httpClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return r.a.cfg.Remote.Dial(ctx, r.target, network, addr)
		},
		DisableKeepAlives: true,
	}}
}

// waitHealthy polls GET path on addr until it answers 200 or timeout,
// calling revive (when not nil) between polls; an error of revive ends the
// wait.
func (r *run) waitHealthy(ctx context.Context, addr, path string, timeout time.Duration, what string, revive func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	client := r.httpClient()
	var last error
	for {
		body, err := r.get(ctx, client, addr, path)
		if err == nil {
			r.out.stdout.add(fmt.Sprintf("%s is healthy: GET %s: %s", what, path, firstLine(body)))
			return nil
		}
		last = err
		var mismatch *remote.HostKeyMismatchError
		if errors.As(err, &mismatch) {
			return err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s did not answer GET %s with 200 within %s: %w", what, path, timeout, last)
		}
		sleep(ctx, 500*time.Millisecond)
		if revive != nil {
			if err := revive(ctx); err != nil {
				return fmt.Errorf("%s is not healthy yet (GET %s: %v), and starting it again failed: %w", what, path, last, err)
			}
		}
	}
}

func (r *run) get(ctx context.Context, client *http.Client, addr, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, firstLine(body))
	}
	return body, nil
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// membersResponse is the part of dm-master's
// GET /apis/v1alpha1/members?leader=true&master=true&worker=true that the
// check reads.
type membersResponse struct {
	Result  bool   `json:"result"`
	Msg     string `json:"msg"`
	Members []struct {
		Leader *struct {
			Name string `json:"name"`
			Addr string `json:"addr"`
		} `json:"leader,omitempty"`
		Master *struct {
			Masters []struct {
				Name  string `json:"name"`
				Alive bool   `json:"alive"`
			} `json:"masters"`
		} `json:"master,omitempty"`
		Worker *struct {
			Workers []struct {
				Name  string `json:"name"`
				Stage string `json:"stage"`
			} `json:"workers"`
		} `json:"worker,omitempty"`
	} `json:"members"`
}

// checkCluster waits until the members API lists every master and worker
// and names a leader.
func (r *run) checkCluster(ctx context.Context) error {
	c := r.d.Step.Check
	if c == nil {
		return errors.New("check step without a check")
	}
	timeout := time.Duration(c.TimeoutSec) * time.Second
	deadline := time.Now().Add(timeout)
	client := r.httpClient()
	var last error
	for {
		last = r.checkMembersOnce(ctx, client, c)
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("cluster members not complete within %s: %w", timeout, last)
		}
		sleep(ctx, time.Second)
	}
}

func (r *run) checkMembersOnce(ctx context.Context, client *http.Client, c *domain.ClusterCheck) error {
	var last error
	for _, addr := range c.MasterAddrs {
		body, err := r.get(ctx, client, addr, "/apis/v1alpha1/members?leader=true&master=true&worker=true")
		if err != nil {
			last = fmt.Errorf("dm-master %s: %w", addr, err)
			continue
		}
		var m membersResponse
		if err := json.Unmarshal(body, &m); err != nil {
			return fmt.Errorf("dm-master %s: members answer: %w", addr, err)
		}
		var leader string
		var masters, workers []string
		for _, mem := range m.Members {
			if mem.Leader != nil {
				leader = mem.Leader.Name
			}
			if mem.Master != nil {
				for _, x := range mem.Master.Masters {
					masters = append(masters, x.Name)
				}
			}
			if mem.Worker != nil {
				for _, x := range mem.Worker.Workers {
					workers = append(workers, x.Name)
				}
			}
		}
		var missing []string
		for _, n := range c.Masters {
			if !slices.Contains(masters, n) {
				missing = append(missing, "master "+n)
			}
		}
		for _, n := range c.Workers {
			if !slices.Contains(workers, n) {
				missing = append(missing, "worker "+n)
			}
		}
		if leader == "" {
			missing = append(missing, "a leader")
		}
		if len(missing) > 0 {
			return fmt.Errorf("dm-master %s: members lack %s", addr, strings.Join(missing, ", "))
		}
		r.out.stdout.add(fmt.Sprintf("members: %d masters (leader %s), %d workers", len(masters), leader, len(workers)))
		return nil
	}
	return last
}

// stopScript stops the process its pid file names (TERM, then KILL after
// 10 s) and removes the pid file; a missing pid file or a dead process is
// already stopped.
const stopScript = `
pidfile=$1
if [ ! -f "$pidfile" ]; then echo "not running (no pid file)"; exit 0; fi
pid=$(cat "$pidfile")
if ! kill -0 "$pid" 2>/dev/null; then rm -f -- "$pidfile"; echo "not running (pid $pid is gone)"; exit 0; fi
kill -TERM "$pid"
i=0
while [ $i -lt 100 ]; do
  if ! kill -0 "$pid" 2>/dev/null; then rm -f -- "$pidfile"; echo "stopped pid $pid"; exit 0; fi
  sleep 0.1; i=$((i+1))
done
kill -KILL "$pid" 2>/dev/null
sleep 0.2
rm -f -- "$pidfile"
echo "killed pid $pid after 10s"
`

// stop stops the instance unless it is stopped.
func (r *run) stop(ctx context.Context) error {
	svc := r.d.Step.Service
	if svc == nil {
		return errors.New("stop step without a service")
	}
	if svc.Manager == domain.ServiceManagerNone {
		return r.sh(ctx, "stop "+svc.Name, remote.RunOptions{Sudo: true}, stopScript, svc.PIDFile)
	}
	return r.sh(ctx, "stop "+svc.Name, remote.RunOptions{Sudo: true},
		`systemctl stop "$1" 2>/dev/null || ! systemctl is-active --quiet "$1"`, svc.Name+".service")
}

// offline takes a master or worker out of the DM cluster through a
// remaining dm-master: DELETE /apis/v1alpha1/members/{master|worker}/{name}.
// A member that is already gone is fine (the step may run twice).
func (r *run) offline(ctx context.Context) error {
	c := r.d.Step.Check
	if c == nil || len(c.MasterAddrs) == 0 {
		return errors.New("offline step without a dm-master to ask")
	}
	kind, name := "worker", ""
	if len(c.Masters) == 1 {
		kind, name = "master", c.Masters[0]
	} else if len(c.Workers) == 1 {
		name = c.Workers[0]
	}
	if name == "" {
		return errors.New("offline step without a member name")
	}
	client := r.httpClient()
	var last error
	for _, addr := range c.MasterAddrs {
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, "http://"+addr+"/apis/v1alpha1/members/"+kind+"/"+name, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			last = fmt.Errorf("dm-master %s: %w", addr, err)
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		var res struct {
			Result bool   `json:"result"`
			Msg    string `json:"msg"`
		}
		_ = json.Unmarshal(body, &res)
		switch {
		case resp.StatusCode == http.StatusOK && res.Result:
			r.out.stdout.add(fmt.Sprintf("%s %s taken offline through %s", kind, name, addr))
			return nil
		case strings.Contains(res.Msg, "not exist"):
			r.out.stdout.add(fmt.Sprintf("%s %s is not a member any more", kind, name))
			return nil
		}
		last = fmt.Errorf("dm-master %s: offline %s %s: %s %s", addr, kind, name, resp.Status, firstLine(body))
	}
	return last
}
