package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dmgr/dmgr/internal/testbed/hosts"
	"github.com/dmgr/dmgr/internal/testenv"
)

// BenchmarkCLIStartup measures a run of the dmgr binary from exec to
// exit: --help (no server), and cluster list against a live server with
// the stored login (one request).
//
//	go test -run '^$' -bench BenchmarkCLIStartup ./cmd/dmgr/
func BenchmarkCLIStartup(b *testing.B) {
	bin := buildCLI(b)
	b.Run("help", func(b *testing.B) {
		u := newCLIUser(b, bin, "")
		for b.Loop() {
			u.ok(b, "", "--help")
		}
	})
	b.Run("cluster-list", func(b *testing.B) {
		cp := startControlPlane(b)
		cp.cliOperator(b, "alice", "alice-password-1")
		u := newCLIUser(b, bin, cp.baseURL())
		u.ok(b, "alice-password-1\n", "login", "--server", cp.baseURL(), "--user", "alice")
		u.ok(b, "", "cluster", "list") // the projections are warm
		for b.Loop() {
			u.ok(b, "", "cluster", "list")
		}
	})
}

// BenchmarkCLIStepLatency measures the time from a step event's commit
// (its time in the event) to its line on the standard output of
// `dmgr operation watch` (not a terminal), over the step events of a
// deploy and a destroy per iteration committed after the watch was
// following (not replayed): p50 and p99 in ms.
//
//	go test -run '^$' -bench BenchmarkCLIStepLatency -benchtime 3x ./cmd/dmgr/
func BenchmarkCLIStepLatency(b *testing.B) {
	bed := hosts.Start(b, 2)
	cp := startControlPlane(b)
	cp.startAgent(b, "agent-1")
	cp.startAgent(b, "agent-2")
	u := cliLoggedIn(b, buildCLI(b), cp, bed, "v8.1.0")
	topo := cliTopology(bed, "/srv/bench", 0)
	var results, started []time.Duration
	for b.Loop() {
		for _, cmd := range []struct{ method, path string }{{"POST", "/api/v1/clusters"}, {"DELETE", "/api/v1/clusters/bench"}} {
			var body any
			if cmd.method == "POST" {
				body = map[string]any{"name": "bench", "version": "v8.1.0", "topology": topo}
			}
			acc := cp.mustAccept(b, cmd.method, cmd.path, body)
			r, s := watchLatencies(b, u, cp, acc.OperationID)
			results, started = append(results, r...), append(started, s...)
		}
	}
	report := func(name string, d []time.Duration) {
		if len(d) == 0 {
			b.Fatalf("no %s lines", name)
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		q := func(p float64) float64 { return float64(d[int(p*float64(len(d)-1))]) / float64(time.Millisecond) }
		b.ReportMetric(q(0.5), name+"-p50-ms")
		b.ReportMetric(q(0.99), name+"-p99-ms")
	}
	report("result", results)
	report("started", started)
	b.ReportMetric(float64(len(results)+len(started))/float64(b.N), "lines/op")
}

// watchLatencies runs dmgr operation watch on op, stamps each step line
// as it arrives, and answers, for result and start lines, the time from
// the event's commit to the line.
func watchLatencies(b *testing.B, u *cliUser, cp *controlPlane, op string) (results, started []time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, u.bin, "operation", "watch", op)
	cmd.Env, cmd.Dir = u.env, u.home
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	type arrival struct {
		key string
		at  time.Time
	}
	var lines []arrival
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		at := time.Now()
		if m := plainStepLine.FindStringSubmatch(sc.Text()); m != nil {
			lines = append(lines, arrival{m[2] + " " + m[5], at})
		}
	}
	if err := cmd.Wait(); err != nil {
		b.Fatalf("dmgr operation watch %s: %v\n%s", op, err, stderr.String())
	}
	commits := eventTimes(b, cp, op)
	// Events committed before the watch had connected come as a replay:
	// only those committed after its first line measure the live path.
	var live time.Time
	if len(lines) > 0 {
		live = lines[0].at
	}
	for _, l := range lines {
		ts := commits[l.key]
		if len(ts) == 0 {
			b.Fatalf("line %q has no event", l.key)
		}
		d := l.at.Sub(ts[0])
		committed := ts[0]
		commits[l.key] = ts[1:]
		if !committed.After(live) {
			continue
		}
		if strings.HasSuffix(l.key, " started") {
			started = append(started, d)
		} else {
			results = append(results, d)
		}
	}
	return results, started
}

// eventTimes reads the operation's event stream once (it ends with the
// operation) and answers each step event's commit time by "step what".
func eventTimes(b *testing.B, cp *controlPlane, op string) map[string][]time.Time {
	b.Helper()
	ctx := testenv.Context(b, time.Minute)
	req, err := http.NewRequestWithContext(ctx, "GET", cp.baseURL()+"/api/v1/operations/"+op+"/events", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+cp.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("events of %s: %s", op, resp.Status)
	}
	what := map[string]string{"StepStarted": "started", "StepSucceeded": "succeeded", "StepFailed": "failed"}
	out := map[string][]time.Time{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev struct {
			Type string    `json:"type"`
			Step string    `json:"step"`
			Time time.Time `json:"time"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			b.Fatalf("event %s: %v", data, err)
		}
		if w := what[ev.Type]; w != "" {
			k := fmt.Sprintf("%s %s", ev.Step, w)
			out[k] = append(out[k], ev.Time)
		}
	}
	return out
}
