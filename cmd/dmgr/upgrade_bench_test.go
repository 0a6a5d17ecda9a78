package main

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/testbed/dmpkg"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
	"github.com/dmgr/dmgr/internal/testenv"
)

// sixInstanceTopology is 3 masters and 3 workers on 3 hosts.
func sixInstanceTopology(bed *hosts.Bed) string {
	s := "global:\n  user: tidb\n  deploy_dir: /srv/u/deploy\n  data_dir: /srv/u/data\n  service_manager: none\nmaster_servers:\n"
	for _, h := range bed.Hosts {
		s += fmt.Sprintf("  - host: %s\n", h.Addr)
	}
	s += "worker_servers:\n"
	for _, h := range bed.Hosts {
		s += fmt.Sprintf("  - host: %s\n", h.Addr)
	}
	return s
}

// BenchmarkUpgrade measures the wall time of a rolling upgrade of a
// 6-instance cluster (3 masters, 3 workers on 3 test hosts, 3 agents),
// one instance at a time, alternating v8.1.0 → v8.5.0 → v8.1.0; and of a
// patch of the 3 workers one at a time against all three at once.
//
//	go test -run '^$' -bench BenchmarkUpgrade -benchtime 3x ./cmd/dmgr/
func BenchmarkUpgrade(b *testing.B) {
	bed := hosts.Start(b, 3)
	cp := startControlPlane(b)
	for i := range 3 {
		cp.startAgent(b, fmt.Sprintf("agent-%d", i+1))
	}
	cp.registerBed(b, bed)
	for _, v := range []string{"v8.1.0", "v8.5.0", "v8.5.0-hotfix.1"} {
		cp.mustAccept(b, "POST", "/api/v1/packages?filename=dm-"+v+".tar.gz", dmpkg.Package(b, v))
	}
	cp.runOperation(b, "POST", "/api/v1/clusters", map[string]any{"name": "bench", "version": "v8.1.0", "topology": sixInstanceTopology(bed)})
	// run answers the wall time of a command as the client sees it (accept,
	// then polling GET /operations/{id}), the operation's own time from its
	// first event to its last, and the roll: from its first step's start,
	// without the coordinator's pick-up of the new operation (which grows
	// with the cluster's history: measured apart).
	run := func(b *testing.B, path string, body any) (wall, own, roll time.Duration) {
		b.Helper()
		start := time.Now()
		acc := cp.mustAccept(b, "POST", path, body)
		op := cp.waitOperation(b, acc.OperationID, 5*time.Minute)
		if op.Status != domain.OperationStatusSucceeded {
			b.Fatalf("%s: %s %s%s", path, op.Status, op.Error, describeSteps(op))
		}
		if testing.Verbose() {
			for _, s := range op.Steps {
				b.Logf("%-32s %6d ms", s.ID, s.DurationMS)
			}
		}
		wall = time.Since(start)
		st, err := cp.store.Load(testenv.Context(b, 10*time.Second), domain.AggregateCluster, "bench")
		if err != nil {
			b.Fatal(err)
		}
		var first, firstStep, last time.Time
		for _, e := range st.Events {
			if e.OperationID == acc.OperationID {
				if first.IsZero() {
					first = e.Time
				}
				last = e.Time
				if firstStep.IsZero() && e.Type == domain.TypeStepStarted {
					firstStep = e.Time
				}
				if testing.Verbose() {
					b.Logf("%8.3fs %s %s", e.Time.Sub(first).Seconds(), e.Type, stepOf(e.Payload))
				}
			}
		}
		return wall, last.Sub(first), last.Sub(firstStep)
	}
	current := "v8.1.0"
	b.Run("upgrade/instances=6", func(b *testing.B) {
		var wall, own, roll time.Duration
		for range b.N {
			v := map[string]string{"v8.1.0": "v8.5.0", "v8.5.0": "v8.1.0"}[current]
			w, o, r := run(b, "/api/v1/clusters/bench/upgrade", map[string]any{"version": v})
			wall, own, roll, current = wall+w, own+o, roll+r, v
		}
		b.ReportMetric(roll.Seconds()/float64(b.N), "s-roll/upgrade")
		b.ReportMetric(wall.Seconds()/float64(b.N), "s-wall/upgrade")
		b.ReportMetric(own.Seconds()/float64(b.N), "s-op/upgrade")
	})
	for _, parallel := range []int{1, 3} {
		b.Run(fmt.Sprintf("patch-workers/parallel=%d", parallel), func(b *testing.B) {
			var wall, own, roll time.Duration
			for range b.N {
				w, o, r := run(b, "/api/v1/clusters/bench/patch", map[string]any{"package": "dm-v8.5.0-hotfix.1-linux-amd64",
					"roles": []string{"dm-worker"}, "parallel": parallel})
				wall, own, roll = wall+w, own+o, roll+r
			}
			b.ReportMetric(roll.Seconds()/float64(b.N), "s-roll/patch")
			b.ReportMetric(wall.Seconds()/float64(b.N), "s-wall/patch")
			b.ReportMetric(own.Seconds()/float64(b.N), "s-op/patch")
		})
	}
}

// stepOf is the step an event's payload names, if any.
func stepOf(payload []byte) string {
	var v struct {
		Step string `json:"step"`
	}
	_ = json.Unmarshal(payload, &v)
	return v.Step
}
