package domain

import (
	"errors"
	"strings"
	"testing"
)

// dispatchCluster is cluster "c1", led by token 7, with operation "op1":
// a three-step chain a → b → c on one host, then what events add.
func dispatchCluster(events ...Event) Cluster {
	plan := []Step{
		{ID: "a", Kind: StepCheckHost, Host: "10.0.0.1"},
		{ID: "b", Kind: StepMakeDirs, Host: "10.0.0.1", Needs: []string{"a"}},
		{ID: "c", Kind: StepStart, Host: "10.0.0.1", Needs: []string{"b"}},
	}
	c := Cluster{Name: "c1"}
	for _, e := range append([]Event{
		OperationRequested{ID: "op1", Kind: OperationDeploy, Cluster: "c1", Plan: plan},
		ClusterLeaderElected{Token: 7, Coordinator: "server-a"},
	}, events...) {
		c = EvolveCluster(c, e)
	}
	return c
}

func stepStarted(id string, attempt int) Event {
	return StepStarted{Operation: "op1", Step: id, Attempt: attempt, Host: "10.0.0.1", Agent: "agent-1"}
}

func stepSucceeded(id string, attempt int) Event {
	return StepSucceeded{Operation: "op1", Step: id, Attempt: attempt, Host: "10.0.0.1", Agent: "agent-1"}
}

func stepFailed(id string, attempt int) Event {
	return StepFailed{Operation: "op1", Step: id, Attempt: attempt, Host: "10.0.0.1", Agent: "agent-1", Error: "boom"}
}

// TestCheckDispatch is the rule an agent applies to every step message:
// it runs only a step that the committed events order now.
func TestCheckDispatch(t *testing.T) {
	failedThenRetried := []Event{stepStarted("a", 1), stepFailed("a", 1),
		OperationFailed{ID: "op1", Attempt: 1, FailedSteps: []string{"a"}, Error: "boom"},
		OperationRetried{ID: "op1", Attempt: 2, Steps: []string{"a"}}}
	tests := []struct {
		name    string
		events  []Event
		op      string
		step    string
		attempt int
		token   int64
		// want is "" for a step that may run, else a part of the reason.
		want   string
		unseen bool
	}{
		{name: "ok: the first step, nothing ran yet", step: "a", attempt: 1, token: 7},
		{name: "ok: its need succeeded", events: []Event{stepStarted("a", 1), stepSucceeded("a", 1)}, step: "b", attempt: 1, token: 7},
		{name: "ok: a redelivery of a step started in this attempt",
			events: []Event{stepStarted("a", 1), stepSucceeded("a", 1), stepStarted("b", 1)}, step: "b", attempt: 1, token: 7},
		{name: "ok: the retried step in the new attempt", events: failedThenRetried, step: "a", attempt: 2, token: 7},
		{name: "not ready: a need has not succeeded", step: "b", attempt: 1, token: 7,
			want: "needs a, which the events do not show succeeded", unseen: true},
		{name: "not ready: a need is running", events: []Event{stepStarted("a", 1)}, step: "b", attempt: 1, token: 7,
			want: "needs a", unseen: true},
		{name: "finished: succeeded", events: []Event{stepStarted("a", 1), stepSucceeded("a", 1)}, step: "a", attempt: 1, token: 7,
			want: "step a of operation op1 has succeeded already"},
		{name: "finished: failed", events: []Event{stepStarted("a", 1), stepFailed("a", 1)}, step: "a", attempt: 1, token: 7,
			want: "has failed already"},
		{name: "wrong attempt: an earlier one", events: failedThenRetried, step: "a", attempt: 1, token: 7,
			want: "attempt 1 of operation op1 is over: the operation is at attempt 2"},
		{name: "wrong attempt: one the events do not have", step: "a", attempt: 2, token: 7,
			want: "attempt 2 of operation op1 is not in the events", unseen: true},
		{name: "cancel requested", events: []Event{stepStarted("a", 1), OperationCancelRequested{ID: "op1"}}, step: "a", attempt: 1, token: 7,
			want: "being cancelled"},
		{name: "cancel requested: no redelivery either",
			events: []Event{stepStarted("a", 1), stepSucceeded("a", 1), stepStarted("b", 1), OperationCancelRequested{ID: "op1"}},
			step:   "b", attempt: 1, token: 7, want: "being cancelled"},
		{name: "unknown step", step: "rm -rf /", attempt: 1, token: 7, want: `has no step "rm -rf /" in its plan`},
		{name: "unknown operation", op: "op-forged", step: "a", attempt: 1, token: 7,
			want: "operation op-forged is not in the events of cluster c1", unseen: true},
		{name: "not active: the operation succeeded",
			events: []Event{stepStarted("a", 1), stepSucceeded("a", 1), stepStarted("b", 1), stepSucceeded("b", 1),
				stepStarted("c", 1), stepSucceeded("c", 1), OperationSucceeded{ID: "op1", Attempt: 1}},
			step: "c", attempt: 1, token: 7, want: "operation op1 is succeeded: its steps run no more"},
		{name: "not active: the operation failed", events: []Event{stepStarted("a", 1), stepFailed("a", 1),
			OperationFailed{ID: "op1", Attempt: 1, FailedSteps: []string{"a"}}}, step: "b", attempt: 1, token: 7,
			want: "operation op1 is failed"},
		{name: "token of an earlier leader", step: "a", attempt: 1, token: 6, want: "led by token 7 since"},
		{name: "token of a leader the events do not show", step: "a", attempt: 1, token: 8,
			want: "do not show taking it over", unseen: true},
		{name: "a new leader fences the old one's running step",
			events: []Event{stepStarted("a", 1), ClusterLeaderElected{Token: 9, Coordinator: "server-b"}}, step: "a", attempt: 1, token: 7,
			want: "led by token 9"},
		{name: "a new leader runs the step again", events: []Event{stepStarted("a", 1), ClusterLeaderElected{Token: 9, Coordinator: "server-b"}},
			step: "a", attempt: 1, token: 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dispatchCluster(tt.events...)
			op := tt.op
			if op == "" {
				op = "op1"
			}
			s, err := c.CheckDispatch(op, tt.step, tt.attempt, tt.token)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if s.ID != tt.step || s.Host != "10.0.0.1" {
					t.Fatalf("step %+v, want the plan's %s", s, tt.step)
				}
				return
			}
			var r *DispatchRefusal
			if !errors.As(err, &r) {
				t.Fatalf("got (%+v, %v), want a refusal containing %q", s, err, tt.want)
			}
			if !strings.Contains(r.Reason, tt.want) || r.Unseen != tt.unseen {
				t.Fatalf("refusal %q (unseen %t), want it to contain %q (unseen %t)", r.Reason, r.Unseen, tt.want, tt.unseen)
			}
			if s.ID != "" {
				t.Fatalf("a refusal returned step %+v", s)
			}
		})
	}
}

// Dispatchable on its own, for the operation-level rules.
func TestOperationDispatchable(t *testing.T) {
	c := dispatchCluster(stepStarted("a", 1), stepSucceeded("a", 1))
	op := c.FindOperation("op1")
	if err := op.Dispatchable("b", 1); err != nil {
		t.Fatalf("b after a succeeded: %v", err)
	}
	for _, tc := range []struct {
		step    string
		attempt int
		want    string
	}{
		{"a", 1, "succeeded already"},
		{"c", 1, "needs b"},
		{"b", 0, "attempt 0 of operation op1 is over"},
		{"nope", 1, `no step "nope"`},
	} {
		if err := op.Dispatchable(tc.step, tc.attempt); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Dispatchable(%q, %d) = %v, want %q", tc.step, tc.attempt, err, tc.want)
		}
	}
}
