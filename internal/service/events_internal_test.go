package service

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

func TestParseEventPos(t *testing.T) {
	good := map[string]EventPos{"1.0": {1, 0}, "42.7": {42, 7}, "18446744073709551615.0": {1<<64 - 1, 0}, "007.01": {7, 1},
		"5.1048576": {5, maxEventIndex}}
	for in, want := range good {
		got, err := ParseEventPos(in)
		if err != nil || got != want {
			t.Errorf("ParseEventPos(%q) = %v, %v; want %v", in, got, err, want)
		}
		if in != "007.01" && got.String() != in { // the id a stream sends reads back the same
			t.Errorf("ParseEventPos(%q).String() = %q", in, got.String())
		}
	}
	bad := map[string]string{
		"": "<seq>.<index>", "1": "<seq>.<index>", "1.": "<seq>.<index>", ".1": "<seq>.<index>", "a.b": "<seq>.<index>",
		"1.2.3": "<seq>.<index>", "-1.0": "<seq>.<index>", "1.-1": "<seq>.<index>", "+1.0": "<seq>.<index>", "1 .0": "<seq>.<index>",
		"1.0\n": "<seq>.<index>", "0x10.0": "<seq>.<index>", "123456789012345678901.0": "<seq>.<index>",
		"0.0": "not a stream sequence", "18446744073709551616.0": "not a stream sequence", "1.1048577": "larger than a commit holds",
	}
	for in, want := range bad {
		_, err := ParseEventPos(in)
		if domain.ErrorCode(err) != domain.Invalid || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseEventPos(%q): %v; want an invalid-input error saying %q", in, err, want)
		}
	}
	if got := (EventPos{Seq: 12, Index: 3}).String(); got != "12.3" {
		t.Errorf("String: %q", got)
	}
	// A malicious id does not flood the message.
	_, err := ParseEventPos(strings.Repeat("9", 10000))
	if err == nil || len(err.Error()) > 300 {
		t.Errorf("a long bad id: %d bytes of error", len(err.Error()))
	}
}

func TestEventPosOrder(t *testing.T) {
	p := EventPos{Seq: 10, Index: 1}
	for _, c := range []struct {
		seq   uint64
		index int
		after bool
	}{{9, 5, false}, {10, 0, false}, {10, 1, false}, {10, 2, true}, {11, 0, true}} {
		if got := p.precedes(c.seq, c.index); got != c.after {
			t.Errorf("%v.precedes(%d, %d) = %v", p, c.seq, c.index, got)
		}
	}
	// From commit 10 on.
	if !(EventPos{Seq: 10, Index: -1}).precedes(10, 0) || (EventPos{Seq: 10, Index: -1}).precedes(9, 3) {
		t.Error("EventPos{10, -1} is not 'from commit 10 on'")
	}
}

// secret is what configs, files, topologies and server_configs hold in
// the events below; no stream line may carry it.
const secret = "pa55w0rd-in-config"

func streamLine(t *testing.T, w *watcher, seq uint64, de domain.Event) map[string]any {
	t.Helper()
	payload, err := json.Marshal(de)
	if err != nil {
		t.Fatal(err)
	}
	ev, ok := w.take(seq, 0, &eventstore.Event{Type: de.EventType(), SchemaVersion: 1, Payload: payload, AggregateType: domain.AggregateCluster,
		AggregateID: "c1", OperationID: "op-1", Actor: "alice", Time: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)})
	if !ok {
		t.Fatalf("%s not sent", de.EventType())
	}
	if strings.Contains(string(ev.Data), secret) || strings.ContainsAny(string(ev.Data), "\n\r") {
		t.Fatalf("%s is sent as %s: it carries a secret or is not one line", de.EventType(), ev.Data)
	}
	var m map[string]any
	if err := json.Unmarshal(ev.Data, &m); err != nil {
		t.Fatal(err)
	}
	if m["seq"] != float64(seq) || m["index"] != 0.0 || m["type"] != de.EventType() || m["actor"] != "alice" || m["cluster"] != "c1" ||
		m["time"] != "2025-01-02T03:04:05.000000006Z" {
		t.Fatalf("%s: envelope %v", de.EventType(), m)
	}
	return m
}

// Every event type that carries configs, files or a topology is sent
// without them; step events carry their step's instance, role and kind.
func TestStreamLinesCarryNoSecret(t *testing.T) {
	plan := []domain.Step{{ID: "files/h1:8261", Kind: domain.StepWriteFiles, Host: "h1", Instance: "h1:8261", Role: domain.RoleMaster,
		Needs: []string{"dirs/h1:8261"}, User: "tidb", Files: []domain.FileSpec{{Path: "/dm/conf/dm-master.toml", Content: "password = \"" + secret + "\""}},
		Service: &domain.ServiceSpec{}}}
	instances := []domain.Instance{{ID: "h1:8261", Name: "m1", Role: domain.RoleMaster, Host: "h1", Port: 8261, Config: map[string]any{"password": secret}}}
	w := &watcher{plans: map[string]map[string]*domain.Step{}}
	req := streamLine(t, w, 1, domain.OperationRequested{ID: "op-1", Kind: domain.OperationDeploy, Cluster: "c1", Plan: plan})
	steps := req["plan"].([]any)
	if len(steps) != 1 || len(steps[0].(map[string]any)) != 6 || req["operation"] != "op-1" || req["kind"] != "deploy" {
		t.Fatalf("OperationRequested: %v; want the slim plan (id, kind, host, instance, role, needs)", req)
	}
	for _, de := range []domain.Event{
		domain.StepStarted{Operation: "op-1", Step: "files/h1:8261", Attempt: 1, Host: "h1", Agent: "a1"},
		domain.StepSucceeded{Operation: "op-1", Step: "files/h1:8261", Attempt: 1, Host: "h1", Agent: "a1", DurationMS: 7, Stdout: "ok"},
		domain.StepFailed{Operation: "op-1", Step: "files/h1:8261", Attempt: 1, Host: "h1", Agent: "a1", ExitCode: 2, Error: "broke"},
	} {
		m := streamLine(t, w, 2, de)
		if m["instance"] != "h1:8261" || m["role"] != string(domain.RoleMaster) || m["kind"] != domain.StepWriteFiles || m["step"] != "files/h1:8261" ||
			m["agent"] != "a1" || m["attempt"] != 1.0 {
			t.Fatalf("%s: %v; want the step's instance, role and kind from the plan", de.EventType(), m)
		}
	}
	for _, de := range []domain.Event{
		domain.ClusterDeployRequested{Name: "c1", Version: "v8.1.0", Topology: "server_configs:\n  master:\n    password: " + secret, Instances: instances,
			Global: domain.GlobalOptions{DeployDir: secret}},
		domain.ClusterScaleOutRequested{Topology: "password: " + secret, Instances: instances},
		domain.ClusterReloadRequested{ServerConfigs: map[string]map[string]any{"master": {"password": secret}}},
	} {
		m := streamLine(t, w, 3, de)
		if de.EventType() == domain.TypeClusterReloadRequested && len(m["sections"].([]any)) != 1 {
			t.Fatalf("reload: %v; want the sections it changed", m)
		}
	}
	for _, c := range []struct {
		de     domain.Event
		status string
	}{{domain.OperationSucceeded{ID: "op-1", Attempt: 2}, "succeeded"}, {domain.OperationFailed{ID: "op-1", Attempt: 2, Error: "x"}, "failed"},
		{domain.OperationCancelled{ID: "op-1", Attempt: 2}, "cancelled"}} {
		if m := streamLine(t, w, 4, c.de); m["status"] != c.status || m["attempt"] != 2.0 || m["operation"] != "op-1" {
			t.Fatalf("%s: %v; want status %s", c.de.EventType(), m, c.status)
		}
	}
	// A type this binary does not know goes out with its envelope only.
	ev, _ := w.take(5, 0, &eventstore.Event{Type: "FutureEvent\nevent: forged", SchemaVersion: 1, Payload: json.RawMessage(`{"password":"` + secret + `"}`),
		AggregateID: "c1", OperationID: "op-1"})
	if strings.Contains(string(ev.Data), secret) || strings.ContainsAny(ev.Type, "\r\n") {
		t.Fatalf("an unknown event type is sent as %q %s", ev.Type, ev.Data)
	}
}
