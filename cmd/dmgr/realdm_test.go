package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testbed/dmpkg"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
	"github.com/dmgr/dmgr/internal/testenv"
)

// realDMHowTo is the skip message of the tests on real DM binaries: how to
// build the two that they take.
const realDMHowTo = `DM_BIN and DM_BIN_NEXT are not set: they name two directories, each holding real dm-master, dm-worker and dm-ctl binaries of different versions. Build them from pingcap/tiflow at tag v9.0.0-beta.2.pre:
  git clone https://github.com/pingcap/tiflow && cd tiflow && git checkout v9.0.0-beta.2.pre
  go build -o /tmp/realdm/cur/ -ldflags "-X github.com/pingcap/tiflow/pkg/version.ReleaseVersion=v9.0.0-beta.2.pre" ./cmd/dm-master ./cmd/dm-worker ./cmd/dm-ctl
  go build -o /tmp/realdm/next/ -ldflags "-X github.com/pingcap/tiflow/pkg/version.ReleaseVersion=v9.0.0-beta.2.pre-next" ./cmd/dm-master ./cmd/dm-worker ./cmd/dm-ctl
then run: DM_BIN=/tmp/realdm/cur DM_BIN_NEXT=/tmp/realdm/next go tool task test:realdm`

// realDM is a control plane with two agents, three test hosts and the
// packages of two real DM builds uploaded.
type realDM struct {
	bed       *hosts.Bed
	cp        *controlPlane
	cur, next string // versions, as the binaries report them
	pkgBytes  int64  // size of the current version's package
}

// startRealDM skips tb without DM_BIN and DM_BIN_NEXT; otherwise it packs
// both builds in the seed-000 layout (dmpkg.WriteReal) and uploads them.
func startRealDM(tb testing.TB) *realDM {
	tb.Helper()
	curDir, nextDir := os.Getenv("DM_BIN"), os.Getenv("DM_BIN_NEXT")
	if curDir == "" || nextDir == "" {
		tb.Skip(realDMHowTo)
	}
	ctx := testenv.Context(tb, 10*time.Minute)
	r := &realDM{}
	var err error
	if r.cur, err = dmpkg.RealVersion(ctx, curDir); err != nil {
		tb.Fatalf("DM_BIN: %v", err)
	}
	if r.next, err = dmpkg.RealVersion(ctx, nextDir); err != nil {
		tb.Fatalf("DM_BIN_NEXT: %v", err)
	}
	if r.cur == r.next {
		tb.Fatalf("DM_BIN and DM_BIN_NEXT both report version %s: build them with different -X github.com/pingcap/tiflow/pkg/version.ReleaseVersion values\n%s", r.cur, realDMHowTo)
	}
	r.bed = hosts.Start(tb, 3)
	r.cp = startControlPlane(tb)
	r.cp.startAgent(tb, "agent-1")
	r.cp.startAgent(tb, "agent-2")
	r.cp.registerBed(tb, r.bed)
	dir := tb.TempDir()
	for _, b := range []struct{ version, bin string }{{r.cur, curDir}, {r.next, nextDir}} {
		begin := time.Now()
		p, err := dmpkg.BuildReal(b.version, b.bin, dir)
		if err != nil {
			tb.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			tb.Fatal(err)
		}
		if b.version == r.cur {
			r.pkgBytes = fi.Size()
		}
		packed := time.Since(begin)
		begin = time.Now()
		r.cp.uploadFile(tb, p)
		tb.Logf("package %s: %d MB, packed in %s, uploaded in %s", filepath.Base(p), fi.Size()>>20,
			packed.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
		_ = os.Remove(p)
	}
	return r
}

// uploadFile posts the package file at path, streaming it.
func (cp *controlPlane) uploadFile(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	req, err := http.NewRequest("POST", cp.baseURL()+"/api/v1/packages?filename="+filepath.Base(path), f)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+cp.token)
	req.Header.Set("Content-Type", "application/gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		tb.Fatalf("upload %s: %d %s", path, resp.StatusCode, body)
	}
}

// op runs one operation to its end and answers its wall time as the
// client sees it; it fails tb unless the operation succeeded with every
// step on its first attempt.
func (r *realDM) op(tb testing.TB, what, method, path string, body any) time.Duration {
	tb.Helper()
	begin := time.Now()
	acc := r.cp.mustAccept(tb, method, path, body)
	op := r.cp.waitOperation(tb, acc.OperationID, 15*time.Minute)
	took := time.Since(begin)
	if op.Status != domain.OperationStatusSucceeded {
		tb.Fatalf("%s: %s %s%s\n%s", what, op.Status, op.Error, describeSteps(op), r.hostLogs(tb))
	}
	for _, s := range op.Steps {
		if s.Attempt > 1 {
			tb.Errorf("%s: step %s ran in attempt %d", what, s.ID, s.Attempt)
		}
	}
	tb.Logf("%-38s %8.1f s", what, took.Seconds())
	return took
}

// hostLogs is the tail of every DM log on the hosts, for a failure.
func (r *realDM) hostLogs(tb testing.TB) string {
	var b strings.Builder
	for i := range r.bed.Hosts {
		out, _ := r.bed.Exec(tb, i+1, `for f in $(find /srv/dm -name '*.log' 2>/dev/null); do echo "== $f"; tail -n 15 "$f"; done`)
		fmt.Fprintf(&b, "host %d:\n%s\n", i+1, out)
	}
	return b.String()
}

// waitLive polls the live display until want holds or a minute passed,
// and answers the last display.
func (r *realDM) waitLive(tb testing.TB, cluster string, want func(service.LiveCluster) string) service.LiveCluster {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		lc := r.cp.live(tb, cluster)
		problem := want(lc)
		if problem == "" {
			return lc
		}
		if time.Now().After(deadline) {
			tb.Fatalf("live display of %s: %s\n%+v", cluster, problem, lc.Instances)
		}
		time.Sleep(time.Second)
	}
}

// allUp wants every instance Up (one master Up|Leader) at version v, and
// n instances.
func allUp(n int, v string) func(service.LiveCluster) string {
	return func(lc service.LiveCluster) string {
		if len(lc.Instances) != n {
			return fmt.Sprintf("%d instances, want %d", len(lc.Instances), n)
		}
		leaders := 0
		for _, in := range lc.Instances {
			switch {
			case in.Status == service.LiveUpLeader:
				leaders++
			case in.Status != service.LiveUp:
				return fmt.Sprintf("%s %s is %s (%s)", in.Role, in.ID, in.Status, in.Error)
			}
			if in.Version != v {
				return fmt.Sprintf("%s %s reports version %q, want %s", in.Role, in.ID, in.Version, v)
			}
		}
		if leaders != 1 {
			return fmt.Sprintf("%d dm-master leaders", leaders)
		}
		return ""
	}
}

// realDMTimes are the wall times of one life of a cluster.
type realDMTimes struct {
	deploy, scaleOut, scaleIn, upgrade, destroy time.Duration
}

// life runs a cluster of 3 masters and 2 workers through deploy, live
// display, scale-out (a master and a worker), scale-in (the same), upgrade
// to the next version and destroy, on real DM, checking each step with
// the live display, DM's members API and the hosts; every operation must
// succeed on its first attempt.
func (r *realDM) life(tb testing.TB, name string) realDMTimes {
	tb.Helper()
	var tm realDMTimes
	h := func(i int) string { return r.bed.Hosts[i-1].Addr }

	tm.deploy = r.op(tb, "deploy 3 masters + 2 workers", "POST", "/api/v1/clusters",
		map[string]any{"name": name, "version": r.cur, "topology": fiveInstanceTopology(r.bed)})
	lc := r.waitLive(tb, name, allUp(5, r.cur))
	if m, w := members(tb, h(1)+":8261"); !slices.Equal(m, []string{"master1", "master2", "master3"}) || !slices.Equal(w, []string{"worker1", "worker2"}) {
		tb.Errorf("members after deploy: masters %v, workers %v", m, w)
	}
	for _, in := range lc.Instances {
		if in.Role == domain.RoleWorker && in.Stage != "free" {
			tb.Errorf("worker %s stage %q, want free (no source bound)", in.ID, in.Stage)
		}
	}

	fragment := fmt.Sprintf("master_servers:\n  - host: %s\n    name: master4\n    port: 8361\n    peer_port: 8391\nworker_servers:\n  - host: %s\n    name: worker3\n    port: 8262\n", h(1), h(3))
	tm.scaleOut = r.op(tb, "scale-out 1 master + 1 worker", "POST", "/api/v1/clusters/"+name+"/scale-out", map[string]any{"topology": fragment})
	r.waitLive(tb, name, allUp(7, r.cur))
	if m, w := members(tb, h(2)+":8261"); !slices.Equal(m, []string{"master1", "master2", "master3", "master4"}) || !slices.Equal(w, []string{"worker1", "worker2", "worker3"}) {
		tb.Errorf("members after scale-out: masters %v, workers %v", m, w)
	}

	tm.scaleIn = r.op(tb, "scale-in 1 master + 1 worker", "POST", "/api/v1/clusters/"+name+"/scale-in",
		map[string]any{"nodes": []string{h(1) + ":8361", h(3) + ":8262"}})
	r.waitLive(tb, name, allUp(5, r.cur))
	if m, w := members(tb, h(3)+":8261"); !slices.Equal(m, []string{"master1", "master2", "master3"}) || !slices.Equal(w, []string{"worker1", "worker2"}) {
		tb.Errorf("members after scale-in: masters %v, workers %v", m, w)
	}

	tm.upgrade = r.op(tb, "upgrade to "+r.next, "POST", "/api/v1/clusters/"+name+"/upgrade", map[string]any{"version": r.next})
	lc = r.waitLive(tb, name, allUp(5, r.next))
	if lc.Version != r.next {
		tb.Errorf("cluster version after the upgrade: %s, want %s", lc.Version, r.next)
	}

	tm.destroy = r.op(tb, "destroy", "DELETE", "/api/v1/clusters/"+name, nil)
	for i := 1; i <= 3; i++ {
		out, err := r.bed.Exec(tb, i, `find /srv/dm -mindepth 2 -maxdepth 2 2>/dev/null; pgrep -f 'bin/dm-(master|worker)' || true`)
		if err != nil || strings.TrimSpace(out) != "" {
			tb.Errorf("host %d after destroy: %v %q", i, err, out)
		}
	}
	evs := r.cp.clusterEvents(tb, name)
	assertFirstAttempt(tb, evs)
	for _, e := range evs {
		if s, ok := e.(domain.StepSucceeded); ok && strings.Contains(s.Stdout, "exited before it was healthy") {
			tb.Logf("step %s restarted its instance, as a service manager would:\n%s", s.Step, strings.TrimSpace(s.Stdout))
		}
	}
	return tm
}

// Issue [7]: the life of a cluster of real DM binaries (DM_BIN, upgraded to
// DM_BIN_NEXT) on three test hosts, every operation on its first attempt.
// Run it with `go tool task test:realdm`; it skips, saying how to build the
// binaries, without them.
func TestRealDMLifecycle(t *testing.T) {
	r := startRealDM(t)
	tm := r.life(t, "real")
	t.Logf("real DM %s -> %s, package %d MB: deploy %.1f s, scale-out %.1f s, scale-in %.1f s, upgrade %.1f s, destroy %.1f s",
		r.cur, r.next, r.pkgBytes>>20, tm.deploy.Seconds(), tm.scaleOut.Seconds(), tm.scaleIn.Seconds(), tm.upgrade.Seconds(), tm.destroy.Seconds())
}

// BenchmarkRealDM reports the wall time of a deploy and of an upgrade of 3
// masters and 2 workers of real DM, as a client sees them (accept, then
// polling the operation), from agents with a cold package cache for the
// first life and a warm one after.
func BenchmarkRealDM(b *testing.B) {
	r := startRealDM(b)
	var sum realDMTimes
	for i := range b.N {
		tm := r.life(b, fmt.Sprintf("bench-%d", i))
		sum.deploy += tm.deploy
		sum.upgrade += tm.upgrade
	}
	b.ReportMetric(sum.deploy.Seconds()/float64(b.N), "s-deploy/3m+2w")
	b.ReportMetric(sum.upgrade.Seconds()/float64(b.N), "s-upgrade/3m+2w")
	b.ReportMetric(float64(r.pkgBytes)/(1<<20), "MB-package")
}
