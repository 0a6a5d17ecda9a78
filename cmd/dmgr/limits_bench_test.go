package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testenv"
)

// wideTopology is a cluster of n instances on hosts: three masters, the
// rest workers, spread round-robin, every port shifted by off and every
// directory under /srv/<name>.
func wideTopology(name string, hosts []string, n, off int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  deploy_dir: /srv/%s/deploy\n  data_dir: /srv/%s/data\n  service_manager: none\nmaster_servers:\n", name, name)
	for i := range 3 {
		fmt.Fprintf(&b, "  - host: %s\n    port: %d\n    peer_port: %d\n", hosts[i%len(hosts)], 8261+off, 8291+off)
	}
	b.WriteString("worker_servers:\n")
	for i := 3; i < n; i++ {
		fmt.Fprintf(&b, "  - host: %s\n    port: %d\n", hosts[i%len(hosts)], 10000+off+i)
	}
	return b.String()
}

// BenchmarkDryRun500 measures a dry run of a 500-instance deploy (3
// masters, 497 workers on 10 machines) through the HTTP API of dmgr dev:
// parse, placement checks against the inventory, the plan, and its JSON
// answer. Target: < 1 s per op.
//
//	go test -run '^$' -bench BenchmarkDryRun500 -benchtime 10x ./cmd/dmgr/
func BenchmarkDryRun500(b *testing.B) {
	d := startInProcessDev(b, "--agent=false")
	hosts := d.registerLoopback(b, 10)
	if a, err := d.do("POST", "/api/v1/packages?filename=dm-v8.1.0.tar.gz", testenv.DMPackage(b, "v8.1.0"),
		map[string]string{"Content-Type": "application/gzip"}, 2*time.Minute); err != nil || a.status != http.StatusAccepted {
		b.Fatalf("upload: %v %d %s", err, a.status, a.body)
	}
	// Another cluster on the same machines, so that placement has
	// allocations to check against.
	d.mustDo(b, "POST", "/api/v1/clusters", map[string]string{"name": "other", "version": "v8.1.0",
		"topology": wideTopology("other", hosts, 500, 1)}, http.StatusAccepted)
	body, _ := json.Marshal(map[string]string{"name": "dry", "version": "v8.1.0", "topology": wideTopology("dry", hosts, 500, 2)})
	var size int
	b.ResetTimer()
	for b.Loop() {
		a, err := d.do("POST", "/api/v1/clusters?dry_run=true", body, nil, time.Minute)
		if err != nil || a.status != http.StatusOK {
			b.Fatalf("dry run: %v %d %s", err, a.status, a.body)
		}
		size = len(a.body)
	}
	b.StopTimer()
	var answer struct{ Plan service.DeployPlan }
	a, _ := d.do("POST", "/api/v1/clusters?dry_run=true", body, nil, time.Minute)
	if err := json.Unmarshal(a.body, &answer); err != nil || len(answer.Plan.Cluster.Instances) != 500 {
		b.Fatalf("the dry run planned %d instances (%v)", len(answer.Plan.Cluster.Instances), err)
	}
	plan := answer.Plan
	b.ReportMetric(float64(size)/(1<<20), "answer-MiB")
	b.ReportMetric(float64(len(plan.Steps)), "steps")
}

// BenchmarkDestroy500Memory measures the memory of dmgr dev while it
// destroys a 500-instance cluster (3 masters, 497 workers on 20 machines).
// The machines are loopback addresses where no SSH server listens, so each
// step fails at once: the deploy fails at its host checks (the cluster is
// then deploy_failed), and the destroy dispatches the 497 worker stops at
// once, records each one's start and failure (about 1,000 results, each a
// decision and an append on the cluster's state kept in memory) and fails
// (the masters' stops and every removal wait on the workers' stops). What
// is measured is the coordinator recording a result per step of a
// 1,000-step plan on a 500-instance cluster, not SSH work.
//
// Reported: the peak Go heap in use (runtime.MemStats.HeapInuse, sampled
// every 20 ms) and the peak RSS (VmHWM, reset before the destroy) of the
// test process, which holds dmgr dev entirely: server, coordinator,
// in-process agent, embedded NATS JetStream and etcd (ClickHouse is a
// child process, not counted). Target: < 300 MB.
//
//	go test -run '^$' -bench BenchmarkDestroy500Memory -benchtime 1x ./cmd/dmgr/
func BenchmarkDestroy500Memory(b *testing.B) {
	d := startInProcessDev(b, "--concurrency", "32")
	hosts := d.registerLoopback(b, 20)
	if a, err := d.do("POST", "/api/v1/packages?filename=dm-v8.1.0.tar.gz", testenv.DMPackage(b, "v8.1.0"),
		map[string]string{"Content-Type": "application/gzip"}, 2*time.Minute); err != nil || a.status != http.StatusAccepted {
		b.Fatalf("upload: %v %d %s", err, a.status, a.body)
	}
	var peakHeap, peakRSS uint64
	var recorded int
	var took time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		name := fmt.Sprintf("wide-%d", i)
		var acc service.Accepted
		_ = json.Unmarshal(d.mustDo(b, "POST", "/api/v1/clusters", map[string]string{"name": name, "version": "v8.1.0",
			"topology": wideTopology(name, hosts, 500, 1000*i)}, http.StatusAccepted), &acc)
		if op := d.waitOperation(b, acc.OperationID); op.Status != domain.OperationStatusFailed {
			b.Fatalf("deploy on machines without SSH: %s, want failed", op.Status)
		}
		runtime.GC()
		resetPeakRSS(b)
		stop := sampleHeap(20*time.Millisecond, &peakHeap)
		start := time.Now()
		b.StartTimer()
		_ = json.Unmarshal(d.mustDo(b, "DELETE", "/api/v1/clusters/"+name, nil, http.StatusAccepted), &acc)
		op := d.waitOperation(b, acc.OperationID)
		b.StopTimer()
		took = time.Since(start)
		stop()
		peakRSS = max(peakRSS, peakRSSBytes(b))
		recorded = 0
		for _, s := range op.Steps {
			if s.Status == "failed" || s.Status == "succeeded" {
				recorded++
			}
		}
		if op.Status != domain.OperationStatusFailed || recorded < 490 {
			b.Fatalf("destroy: %s with %d steps recorded; want failed after the worker stops", op.Status, recorded)
		}
	}
	b.ReportMetric(float64(peakHeap)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(peakRSS)/(1<<20), "peak-rss-MiB")
	b.ReportMetric(float64(recorded), "steps-finished")
	b.ReportMetric(took.Seconds(), "destroy-s")
}

// waitOperation polls an operation until it is over.
func (d *inProcessDev) waitOperation(tb testing.TB, id string) domain.OperationView {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		a, err := d.do("GET", "/api/v1/operations/"+id, nil, nil, time.Minute)
		if err == nil && a.status == http.StatusOK {
			var op domain.OperationView
			if err := json.Unmarshal(a.body, &op); err != nil {
				tb.Fatal(err)
			}
			if op.Status != domain.OperationStatusPending && op.Status != domain.OperationStatusRunning {
				return op
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("operation %s did not end", id)
		}
	}
}

// sampleHeap records the largest HeapInuse seen until the returned stop
// is called.
func sampleHeap(every time.Duration, peak *uint64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			*peak = max(*peak, ms.HeapInuse)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// resetPeakRSS resets the process's peak RSS (VmHWM) to its current RSS.
func resetPeakRSS(tb testing.TB) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		tb.Logf("reset peak RSS: %v (the peak reported is since the process started)", err)
	}
}

// peakRSSBytes is the process's peak RSS (VmHWM).
func peakRSSBytes(tb testing.TB) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no VmHWM in /proc/self/status")
	return 0
}
