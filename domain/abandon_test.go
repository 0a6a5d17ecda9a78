package domain

import (
	"slices"
	"strings"
	"testing"
)

func TestDecideAbandonOperation(t *testing.T) {
	const op = "op-deploy-prod-a"
	base := deployingProdA(t)
	base, _ = report(t, base, started("check/198.18.0.11", "agent-1", 1))
	base, _ = report(t, base, succeeded("check/198.18.0.11", "agent-1", 1))
	base, _ = report(t, base, started("check/198.18.0.12", "agent-1", 1))
	base, _ = report(t, base, started("check/198.18.0.13", "agent-2", 1))
	led := EvolveCluster(base, ClusterLeaderElected{Token: 7, Coordinator: "c1"})
	led, _ = report(t, led, StepReport{Operation: op, Step: "check/198.18.0.12", Attempt: 1, Token: 7, Agent: "agent-1"})
	long := strings.Repeat("é", 3000)

	tests := []struct {
		name       string
		c          Cluster
		a          AbandonOperation
		writer     int64
		wantErr    string
		wantFailed []string // StepFailed events, in plan order; nil with wantNone
		wantNone   bool
		wantReason string
	}{
		{name: "running steps fail with the reason", c: base, a: AbandonOperation{ID: op, Attempt: 1, Reason: "publish step: nats: maximum payload exceeded"},
			wantFailed: []string{"check/198.18.0.12", "check/198.18.0.13"}, wantReason: "publish step: nats: maximum payload exceeded"},
		{name: "the named pending step fails too", c: base, a: AbandonOperation{ID: op, Attempt: 1, Step: "user/198.18.0.11", Reason: "r"},
			wantFailed: []string{"check/198.18.0.12", "check/198.18.0.13", "user/198.18.0.11"}, wantReason: "r"}, // plan order: the user steps wait for every check
		{name: "a named step that finished stays as it is", c: base, a: AbandonOperation{ID: op, Attempt: 1, Step: "check/198.18.0.11", Reason: "r"},
			wantFailed: []string{"check/198.18.0.12", "check/198.18.0.13"}, wantReason: "r"},
		{name: "after a new leader only what runs under it", c: led, writer: 7, a: AbandonOperation{ID: op, Attempt: 1, Reason: "r"},
			wantFailed: []string{"check/198.18.0.12"}, wantReason: "r"},
		{name: "an empty reason still says why", c: base, a: AbandonOperation{ID: op, Attempt: 1},
			wantFailed: []string{"check/198.18.0.12", "check/198.18.0.13"}, wantReason: "the coordinator could not advance the operation"},
		{name: "a long reason is cut", c: base, a: AbandonOperation{ID: op, Attempt: 1, Reason: long},
			wantFailed: []string{"check/198.18.0.12", "check/198.18.0.13"}, wantReason: long[:maxAbandonReason] + "…"},
		{name: "a stale writer is refused", c: led, writer: 6, a: AbandonOperation{ID: op, Attempt: 1, Reason: "r"},
			wantErr: "cluster prod-a is led by token 7; this coordinator's token 6 is stale"},
		{name: "another attempt decides nothing", c: base, a: AbandonOperation{ID: op, Attempt: 2, Reason: "r"}, wantNone: true},
		{name: "an unknown operation decides nothing", c: base, a: AbandonOperation{ID: "op-x", Attempt: 1, Reason: "r"}, wantNone: true},
		{name: "an operation that is over decides nothing", c: deployedProdA(t), a: AbandonOperation{ID: op, Attempt: 1, Reason: "r"}, wantNone: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := DecideAbandonOperation(&tt.c, tt.a, tt.writer)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr || ErrorCode(err) != Conflict || evs != nil {
					t.Fatalf("= %v, %v; want conflict %q", evs, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantNone {
				if len(evs) != 0 {
					t.Fatalf("= %v, want nothing", evs)
				}
				return
			}
			var failedSteps []string
			for _, e := range evs[:len(evs)-1] {
				f, ok := e.(StepFailed)
				if !ok || f.Error != tt.wantReason || f.Agent != "coordinator" || f.Attempt != 1 || f.Host == "" {
					t.Fatalf("event %#v, want a StepFailed by the coordinator with the reason", e)
				}
				failedSteps = append(failedSteps, f.Step)
			}
			if !slices.Equal(failedSteps, tt.wantFailed) {
				t.Fatalf("failed steps %v, want %v", failedSteps, tt.wantFailed)
			}
			of, ok := evs[len(evs)-1].(OperationFailed)
			if !ok || of.ID != op || of.Error != "the coordinator gave up on the operation: "+tt.wantReason || !slices.Equal(of.FailedSteps, tt.wantFailed) {
				t.Fatalf("last event %#v, want OperationFailed with the reason and the failed steps", evs[len(evs)-1])
			}
			after := tt.c
			for _, e := range evs {
				after = EvolveCluster(after, e)
			}
			if after.ActiveOperation() != nil || after.Status != ClusterStatusDeployFailed || after.FindOperation(op).Error != of.Error {
				t.Fatalf("after: status %s, active %v", after.Status, after.ActiveOperation())
			}
			// A retry runs the abandoned steps again.
			retry, err := DecideRetryOperation(&after, RetryOperation{ID: op})
			if err != nil || !slices.Equal(retry[0].(OperationRetried).Steps, tt.wantFailed) {
				t.Fatalf("retry = %v, %v; want the abandoned steps again", retry, err)
			}
		})
	}
}
