package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/agents"
	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/testbed/dmpkg"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
	"github.com/dmgr/dmgr/internal/testenv"
)

// realSizePad makes the simulator package as big as a real one: real
// dm-master and dm-worker binaries are about 200 MB each, compressed about
// 125 MB, and a real package about 252 MB.
const realSizePad = 125 << 20

// fiveInstanceTopology is 3 masters and 2 workers on three hosts, no
// monitoring: the shape of the real-DM lifecycle.
func fiveInstanceTopology(bed *hosts.Bed) string {
	h := func(i int) string { return bed.Hosts[i-1].Addr }
	return fmt.Sprintf(`global:
  user: tidb
  deploy_dir: /srv/dm/deploy
  data_dir: /srv/dm/data
  service_manager: none
master_servers:
  - host: %[1]s
    name: master1
  - host: %[2]s
    name: master2
  - host: %[3]s
    name: master3
worker_servers:
  - host: %[1]s
    name: worker1
  - host: %[2]s
    name: worker2
`, h(1), h(2), h(3))
}

// assertFirstAttempt fails t when the cluster's events hold a failed step
// or a retried operation: every operation succeeded on its first attempt.
func assertFirstAttempt(t testing.TB, evs []domain.Event) {
	t.Helper()
	for _, e := range evs {
		switch e := e.(type) {
		case domain.StepFailed:
			t.Errorf("step %s of operation %s failed (attempt %d, agent %s): %s", e.Step, e.Operation, e.Attempt, e.Agent, e.Error)
		case domain.OperationRetried:
			t.Errorf("operation %s was retried (attempt %d)", e.ID, e.Attempt)
		}
	}
}

// startCachingAgent runs `dmgr agent` in the test process, so that a test
// can read its package cache's counts; its log is shown when t fails.
func (cp *controlPlane) startCachingAgent(t testing.TB, id string) *agents.Agent {
	t.Helper()
	cfg, err := parseConfig("agent", append([]string{"--nats-url", cp.natsURL, "--nats-nkey-file", cp.natsSeeds[busauth.Agent], "--etcd-endpoints", cp.etcdURL, "--agent-id", id,
		"--ack-wait", "3s", "--ssh-dial-timeout", "2s", "--cache-dir", t.TempDir()}, cp.etcdAgent...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testenv.Buffer{}
	m := NewMain(cfg, zerolog.New(logs).With().Timestamp().Logger(), io.Discard)
	if err := m.Run(testenv.Context(t, time.Hour)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = m.Close()
		if t.Failed() {
			t.Logf("agent %s log (tail):\n%s", id, tailOf(logs.String(), 6000))
		}
	})
	return m.agent
}

// Issue [7]: a package as big as a real one (dm-master and dm-worker of
// 125 MB of incompressible data each, 260 MB in all) deploys 3 masters and
// 2 workers to 3 hosts on the first attempt: every copy step reads the
// package from the object store without a timeout, each agent reads it
// once, and its files go from the agent's cache to every instance. A
// scale-out then needs no read of the package at all, and a new master
// that exits at its first start (as a real dm-master does when it joins an
// etcd cluster formed moments before) is started again within its step.
func TestLargePackageDeploysOnTheFirstAttempt(t *testing.T) {
	bed := hosts.Start(t, 3)
	cp := startControlPlane(t)
	agentList := []*agents.Agent{cp.startCachingAgent(t, "agent-1"), cp.startCachingAgent(t, "agent-2")}
	cp.registerBed(t, bed)
	begin := time.Now()
	pkg := dmpkg.PackageWith(t, "v8.1.0", dmpkg.Options{PadBinaries: realSizePad})
	if len(pkg) < 250<<20 {
		t.Fatalf("package is %d bytes, want at least 250 MB", len(pkg))
	}
	t.Logf("package of %d MB built in %s", len(pkg)>>20, time.Since(begin).Round(time.Millisecond))
	begin = time.Now()
	cp.mustAccept(t, "POST", "/api/v1/packages?filename=dm-v8.1.0.tar.gz", pkg)
	t.Logf("uploaded in %s", time.Since(begin).Round(time.Millisecond))

	cacheStats := func() (fetches, served int64) {
		for _, a := range agentList {
			st := a.CacheStats()
			if st.Fetches > 1 {
				t.Errorf("agent %s read the package %d times from the object store, want at most once", a.ID(), st.Fetches)
			}
			fetches += st.Fetches
			served += st.Hits + st.Misses
		}
		return fetches, served
	}

	begin = time.Now()
	op := cp.runOperation(t, "POST", "/api/v1/clusters", map[string]any{"name": "big", "version": "v8.1.0", "topology": fiveInstanceTopology(bed)})
	t.Logf("deployed 3 masters + 2 workers in %s", time.Since(begin).Round(time.Millisecond))
	for _, s := range op.Steps {
		if s.Attempt > 1 {
			t.Errorf("step %s ran in attempt %d", s.ID, s.Attempt)
		}
	}
	fetches, served := cacheStats()
	if served != 5 || fetches < 1 || fetches > 2 {
		t.Errorf("the agents' caches served %d package files (want 5, one per instance) after %d object store reads (want one per agent that copied)", served, fetches)
	}
	for i := 1; i <= 3; i++ {
		out, err := bed.Exec(t, i, `stat -c %s /srv/dm/deploy/dm-master-8261/bin/dm-master`)
		if err != nil || strings.TrimSpace(out) == "" {
			t.Fatalf("host %d: %v %s", i, err, out)
		}
		var size int64
		fmt.Sscan(out, &size)
		if size < realSizePad {
			t.Errorf("host %d: dm-master is %d bytes, want the padded binary", i, size)
		}
	}

	h := func(i int) string { return bed.Hosts[i-1].Addr }
	fragment := fmt.Sprintf("master_servers:\n  - host: %s\n    name: master4\n    port: 8361\n    peer_port: 8391\n    config:\n      sim-fail-starts: 1\nworker_servers:\n  - host: %s\n    name: worker3\n    port: 8262\n", h(1), h(3))
	cp.runOperation(t, "POST", "/api/v1/clusters/big/scale-out", map[string]any{"topology": fragment})
	// Each agent reads the package from the object store once, ever: an
	// agent that took no copy step of the deploy reads it now, the other
	// serves from its cache.
	if again, _ := cacheStats(); again > 2 || again < fetches {
		t.Errorf("the scale-out read the package again: %d object store reads, %d before (want at most one per agent, 2)", again, fetches)
	}
	evs := cp.clusterEvents(t, "big")
	assertFirstAttempt(t, evs)
	restarted := false
	for _, e := range evs {
		if s, ok := e.(domain.StepSucceeded); ok && s.Step == "start/"+h(1)+":8361" {
			restarted = strings.Contains(s.Stdout, "exited before it was healthy; started again")
		}
	}
	if !restarted {
		t.Error("the start of master4, whose first start fails, does not say it started it again")
	}
	if out, _ := bed.Exec(t, 1, `ls /srv/dm/data/dm-master-8361 | grep -c '^started-'`); strings.TrimSpace(out) != "2" {
		t.Errorf("master4 started %s times, want twice (the failed start and the next)", strings.TrimSpace(out))
	}
	if m, w := members(t, h(2)+":8261"); !slices.Equal(m, []string{"master1", "master2", "master3", "master4"}) || !slices.Equal(w, []string{"worker1", "worker2", "worker3"}) {
		t.Errorf("members after scale-out: %v %v", m, w)
	}
}
