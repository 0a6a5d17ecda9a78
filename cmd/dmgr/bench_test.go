package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/testbed/dmpkg"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
	"github.com/dmgr/dmgr/internal/testenv"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// startInProcessAgent runs `dmgr agent` inside the test process, so that a
// benchmark can read its SSH connection counts.
func (cp *controlPlane) startInProcessAgent(tb testing.TB, id string) *Main {
	tb.Helper()
	cfg, err := parseConfig("agent", append([]string{"--nats-url", cp.natsURL, "--nats-nkey-file", cp.natsSeeds[busauth.Agent], "--etcd-endpoints", cp.etcdURL, "--agent-id", id,
		"--ack-wait", "10s", "--cache-dir", tb.TempDir()}, cp.etcdAgent...), io.Discard)
	if err != nil {
		tb.Fatal(err)
	}
	m := NewMain(cfg, zerolog.Nop(), io.Discard)
	if err := m.Run(testenv.Context(tb, time.Hour)); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = m.Close() })
	return m
}

// benchTopology puts masters on the first half of the hosts (at least one)
// and workers on the rest (at least one), and the monitoring on the last
// host; off shifts every port and directory so that several clusters share
// the hosts.
func benchTopology(bed *hosts.Bed, off int) string {
	n := len(bed.Hosts)
	masters := max(1, n/2)
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  user: tidb\n  deploy_dir: /srv/b%d/deploy\n  data_dir: /srv/b%d/data\n  service_manager: none\n", off, off)
	b.WriteString("master_servers:\n")
	for i := 0; i < masters; i++ {
		fmt.Fprintf(&b, "  - host: %s\n    port: %d\n    peer_port: %d\n", bed.Hosts[i].Addr, 8261+off, 8291+off)
	}
	b.WriteString("worker_servers:\n")
	for i := min(masters, n-1); i < n; i++ {
		fmt.Fprintf(&b, "  - host: %s\n    port: %d\n", bed.Hosts[i].Addr, 8262+off)
	}
	last := bed.Hosts[n-1].Addr
	fmt.Fprintf(&b, "monitoring_servers:\n  - host: %s\n    port: %d\n", last, 9090+off)
	fmt.Fprintf(&b, "grafana_servers:\n  - host: %s\n    port: %d\n", last, 3000+off)
	fmt.Fprintf(&b, "alertmanager_servers:\n  - host: %s\n    web_port: %d\n    cluster_port: %d\n", last, 9093+off, 9094+off)
	return b.String()
}

// BenchmarkDeploy measures the wall time of a deploy on 1, 3 and 6 test
// hosts with 3 agents, and the SSH connections the agents opened per host.
//
//	go test -run '^$' -bench BenchmarkDeploy -benchtime 3x ./cmd/dmgr/
func BenchmarkDeploy(b *testing.B) {
	for _, n := range []int{1, 3, 6} {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			bed := hosts.Start(b, n)
			cp := startControlPlane(b)
			var agents []*Main
			for i := range 3 {
				agents = append(agents, cp.startInProcessAgent(b, fmt.Sprintf("bench-%d", i)))
			}
			cp.registerBed(b, bed)
			cp.mustAccept(b, "POST", "/api/v1/packages?filename=dm-v8.1.0.tar.gz", dmpkg.Package(b, "v8.1.0"))
			b.ResetTimer()
			for i := range b.N {
				name := fmt.Sprintf("bench%d", i)
				acc := cp.mustAccept(b, "POST", "/api/v1/clusters", map[string]any{"name": name, "version": "v8.1.0",
					"topology": benchTopology(bed, 10*(i+1))})
				if op := cp.waitOperation(b, acc.OperationID, 5*time.Minute); op.Status != domain.OperationStatusSucceeded {
					b.Fatalf("deploy %s: %s %s", name, op.Status, op.Error)
				}
			}
			b.StopTimer()
			maxDials := 0
			for _, a := range agents {
				for _, st := range a.agent.SSHStats() {
					maxDials = max(maxDials, st.Dials)
				}
			}
			b.ReportMetric(float64(maxDials), "max-ssh-conns/agent/host")
		})
	}
}

// BenchmarkAgentSteps measures agent step throughput with 1 and 3 agents:
// no-op steps that run `true` over SSH on 3 hosts, and no-op steps without
// a host (the queue, the agent's check of each step against etcd and the
// committed events, and the result path alone).
//
//	go test -run '^$' -bench BenchmarkAgentSteps -benchtime 2000x ./cmd/dmgr/
func BenchmarkAgentSteps(b *testing.B) {
	bed := hosts.Start(b, 3)
	cp := startControlPlane(b)
	cp.registerBed(b, bed)
	var machines []domain.Machine
	for _, h := range bed.Hosts {
		var m domain.Machine
		cp.api(b, "GET", "/api/v1/machines/"+h.Addr, nil, &m)
		machines = append(machines, m)
	}
	run := 0
	for _, nAgents := range []int{1, 3} {
		for _, remote := range []bool{true, false} {
			b.Run(fmt.Sprintf("agents=%d/ssh=%t", nAgents, remote), func(b *testing.B) {
				run++
				var agents []*Main
				for i := range nAgents {
					agents = append(agents, cp.startInProcessAgent(b, fmt.Sprintf("tp%d-%d", run, i)))
				}
				defer func() {
					for _, a := range agents {
						_ = a.Close()
					}
				}()
				cluster := fmt.Sprintf("noop-%d", run)
				ctx := testenv.Context(b, 10*time.Minute)
				cons, err := cp.js.OrderedConsumer(ctx, workqueue.ResultsStream, jetstream.OrderedConsumerConfig{
					FilterSubjects: []string{workqueue.ResultSubject(cluster)}})
				if err != nil {
					b.Fatal(err)
				}
				var finished atomic.Int64
				done := make(chan struct{})
				cc, err := cons.Consume(func(msg jetstream.Msg) {
					var r workqueue.Result
					if workqueue.Decode(msg, &r) == nil && r.Finished {
						if !r.OK {
							b.Errorf("noop step failed: %s", r.Error)
						}
						if finished.Add(1) == int64(b.N) {
							close(done)
						}
					}
				})
				if err != nil {
					b.Fatal(err)
				}
				defer cc.Stop()
				// The benchmark leads the cluster itself: it holds the leader
				// key (so no coordinator takes the cluster) and commits an
				// operation of b.N no-op steps, which agents check against
				// the events before they run them.
				token := cp.leadNoopOperation(b, ctx, cluster, machines, remote)
				b.ResetTimer()
				for i := range b.N {
					d := workqueue.Dispatch{Cluster: cluster, Operation: cluster, Attempt: 1, Token: token, Step: fmt.Sprintf("noop-%d", i)}
					if err := workqueue.PublishDispatch(ctx, cp.js, workqueue.DefaultPool, d); err != nil {
						b.Fatal(err)
					}
				}
				select {
				case <-done:
				case <-ctx.Done():
					b.Fatalf("%d of %d steps finished", finished.Load(), b.N)
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "steps/s")
			})
		}
	}
}

// leadNoopOperation takes cluster's leader key in etcd and commits an
// operation (with the cluster's name as its id) of b.N no-op steps "noop-i",
// on the machines in turn when remote, without a host otherwise, with the
// leadership: what a coordinator commits before it dispatches. It returns
// the leader token.
func (cp *controlPlane) leadNoopOperation(b *testing.B, ctx context.Context, cluster string, machines []domain.Machine, remote bool) int64 {
	b.Helper()
	resp, err := cp.main.etcd.Put(ctx, leadership.ClusterLeaderKeys(cluster)+"bench", "bench")
	if err != nil {
		b.Fatal(err)
	}
	token := resp.Header.Revision
	plan := make([]domain.Step, b.N)
	for i := range plan {
		plan[i] = domain.Step{ID: fmt.Sprintf("noop-%d", i), Kind: domain.StepNoop}
		if remote {
			plan[i].Host = machines[i%len(machines)].Host
		}
	}
	c := eventstore.Commit{CommitID: uuid.NewString(), AggregateType: domain.AggregateCluster, AggregateID: cluster,
		Time: time.Now().UTC(), Actor: "bench", FencingToken: token}
	for _, e := range []domain.Event{
		domain.OperationRequested{ID: cluster, Kind: "noop", Cluster: cluster, Plan: plan},
		domain.ClusterLeaderElected{Token: token, Coordinator: "bench"},
	} {
		payload, err := json.Marshal(e)
		if err != nil {
			b.Fatal(err)
		}
		c.Events = append(c.Events, eventstore.NewEvent{Type: e.EventType(), SchemaVersion: 1, Payload: payload})
	}
	if _, err := cp.store.Append(ctx, c, eventstore.Expect{}); err != nil {
		b.Fatal(err)
	}
	return token
}
