package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/testbed/dmpkg"
	"github.com/dmgr/dmgr/testbed/hosts"
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
	run := func(b *testing.B, path string, body any) time.Duration {
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
		return time.Since(start)
	}
	current := "v8.1.0"
	b.Run("upgrade/instances=6", func(b *testing.B) {
		var total time.Duration
		for range b.N {
			v := map[string]string{"v8.1.0": "v8.5.0", "v8.5.0": "v8.1.0"}[current]
			total += run(b, "/api/v1/clusters/bench/upgrade", map[string]any{"version": v})
			current = v
		}
		b.ReportMetric(total.Seconds()/float64(b.N), "s/upgrade")
	})
	for _, parallel := range []int{1, 3} {
		b.Run(fmt.Sprintf("patch-workers/parallel=%d", parallel), func(b *testing.B) {
			var total time.Duration
			for range b.N {
				total += run(b, "/api/v1/clusters/bench/patch", map[string]any{"package": "dm-v8.5.0-hotfix.1-linux-amd64",
					"roles": []string{"dm-worker"}, "parallel": parallel})
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s/patch")
		})
	}
}
