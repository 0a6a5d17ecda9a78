package domain

import (
	"fmt"
	"strings"
)

// StepStarted: an agent began a step.
type StepStarted struct {
	Operation string `json:"operation"`
	Step      string `json:"step"`
	Attempt   int    `json:"attempt"`
	Host      string `json:"host"`
	Agent     string `json:"agent"`
}

// StepSucceeded: a step finished well.
type StepSucceeded struct {
	Operation  string `json:"operation"`
	Step       string `json:"step"`
	Attempt    int    `json:"attempt"`
	Host       string `json:"host"`
	Agent      string `json:"agent"`
	DurationMS int64  `json:"duration_ms"`
	Stdout     string `json:"stdout,omitempty"` // tail
	Stderr     string `json:"stderr,omitempty"` // tail
}

// StepFailed: a step failed after its retries; Error names the host and
// the step.
type StepFailed struct {
	Operation  string `json:"operation"`
	Step       string `json:"step"`
	Attempt    int    `json:"attempt"`
	Host       string `json:"host"`
	Agent      string `json:"agent"`
	ExitCode   int    `json:"exit_code"`
	Error      string `json:"error"`
	DurationMS int64  `json:"duration_ms"`
	Stdout     string `json:"stdout,omitempty"`
	Stderr     string `json:"stderr,omitempty"`
}

// OperationSucceeded: every step of the operation succeeded.
type OperationSucceeded struct {
	ID      string `json:"id"`
	Attempt int    `json:"attempt"`
}

// OperationFailed: a step failed and nothing else could run.
type OperationFailed struct {
	ID          string   `json:"id"`
	Attempt     int      `json:"attempt"`
	FailedSteps []string `json:"failed_steps"`
	Error       string   `json:"error"`
}

// OperationRetried: a failed operation was resumed; Steps are the failed
// steps that run again (the succeeded ones are kept).
type OperationRetried struct {
	ID      string   `json:"id"`
	Attempt int      `json:"attempt"`
	Steps   []string `json:"steps"`
}

// OperationCancelRequested: a cancel was asked for; nothing more is
// dispatched.
type OperationCancelRequested struct {
	ID string `json:"id"`
}

// OperationCancelled: a cancelled operation's running steps are over.
type OperationCancelled struct {
	ID      string `json:"id"`
	Attempt int    `json:"attempt"`
}

// ClusterLeaderElected: a coordinator took the cluster over with a fencing
// token larger than every earlier leader's.
type ClusterLeaderElected struct {
	Token       int64  `json:"token"`
	Coordinator string `json:"coordinator"`
}

// StepReport is what an agent reports about a step it runs.
type StepReport struct {
	Operation  string
	Step       string
	Attempt    int
	Token      int64 // fencing token of the dispatch
	Agent      string
	Finished   bool // false: the step started
	OK         bool
	ExitCode   int
	Error      string
	DurationMS int64
	Stdout     string
	Stderr     string
}

// DecideStepReport turns an agent's report into events, written by the
// coordinator whose fencing token is writer. A writer older than the
// cluster's leader is refused (a stale leader must stop). Reports of
// another attempt or leader, of an operation that is over, of an unknown
// step, or repeated (a redelivered result) decide nothing: at-least-once
// delivery is normal. The report that settles the operation also records
// its outcome.
func DecideStepReport(c *Cluster, r StepReport, writer int64) ([]Event, error) {
	if writer < c.LeaderToken {
		return nil, Errorf(Conflict, "cluster %s is led by token %d; this coordinator's token %d is stale", c.Name, c.LeaderToken, writer)
	}
	op := c.FindOperation(r.Operation)
	if op == nil || !op.Active() || r.Attempt != op.Attempt || r.Token != c.LeaderToken {
		return nil, nil
	}
	step := op.step(r.Step)
	if step == nil {
		return nil, nil
	}
	st := op.Steps[r.Step]
	if st.Status == StepStatusSucceeded || st.Status == StepStatusFailed {
		return nil, nil
	}
	if !r.Finished {
		if st.Status == StepStatusRunning && st.Agent == r.Agent {
			return nil, nil
		}
		return []Event{StepStarted{Operation: op.ID, Step: r.Step, Attempt: r.Attempt, Host: step.Host, Agent: r.Agent}}, nil
	}
	var e Event
	if r.OK {
		e = StepSucceeded{Operation: op.ID, Step: r.Step, Attempt: r.Attempt, Host: step.Host, Agent: r.Agent,
			DurationMS: r.DurationMS, Stdout: r.Stdout, Stderr: r.Stderr}
	} else {
		msg := r.Error
		if msg == "" {
			msg = fmt.Sprintf("exit code %d", r.ExitCode)
		}
		e = StepFailed{Operation: op.ID, Step: r.Step, Attempt: r.Attempt, Host: step.Host, Agent: r.Agent,
			ExitCode: r.ExitCode, Error: msg, DurationMS: r.DurationMS, Stdout: r.Stdout, Stderr: r.Stderr}
	}
	after := EvolveCluster(*c, e)
	return append([]Event{e}, outcome(after.FindOperation(op.ID))...), nil
}

// outcome is the event that ends an operation with nothing left to run,
// or nothing.
func outcome(op *Operation) []Event {
	p := op.Progress()
	switch {
	case !p.Done:
		return nil
	case p.Succeeded == len(op.Plan):
		return []Event{OperationSucceeded{ID: op.ID, Attempt: op.Attempt}}
	case op.Cancelling:
		return []Event{OperationCancelled{ID: op.ID, Attempt: op.Attempt}}
	}
	return []Event{OperationFailed{ID: op.ID, Attempt: op.Attempt, FailedSteps: p.Failed, Error: describeFailures(op, p.Failed)}}
}

// CancelOperation stops an operation: nothing more is dispatched, running
// steps finish, then the operation is cancelled.
type CancelOperation struct {
	ID string
}

// DecideCancelOperation decides a cancel. It is recorded at once as
// cancelled when no step runs.
func DecideCancelOperation(c *Cluster, r CancelOperation) ([]Event, error) {
	op := c.FindOperation(r.ID)
	switch {
	case op == nil:
		return nil, Errorf(NotFound, "operation %s does not exist", r.ID)
	case !op.Active():
		return nil, Errorf(Conflict, "operation %s is %s: there is nothing to cancel", r.ID, op.Status)
	case op.Cancelling:
		return nil, Errorf(Conflict, "operation %s is already being cancelled; it ends when its running steps have", r.ID)
	}
	e := OperationCancelRequested{ID: op.ID}
	after := EvolveCluster(*c, e)
	return append([]Event{e}, outcome(after.FindOperation(op.ID))...), nil
}

// DecideLeadership records that a coordinator took the cluster over, when
// its token is newer than the cluster's leader's; an equal token (the same
// leader again) decides nothing, an older one is refused.
func DecideLeadership(c *Cluster, token int64, coordinator string) ([]Event, error) {
	switch {
	case token == c.LeaderToken:
		return nil, nil
	case token < c.LeaderToken:
		return nil, Errorf(Conflict, "cluster %s is led by token %d; token %d of %s is stale", c.Name, c.LeaderToken, token, coordinator)
	}
	return []Event{ClusterLeaderElected{Token: token, Coordinator: coordinator}}, nil
}

// describeFailures names the failed steps, their hosts and errors.
func describeFailures(op *Operation, failed []string) string {
	var b strings.Builder
	for i, id := range failed {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(failed)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		host := ""
		if s := op.step(id); s != nil {
			host = s.Host
		}
		fmt.Fprintf(&b, "step %s on %s: %s", id, host, op.Steps[id].Error)
	}
	return b.String()
}

// RetryOperation resumes a failed operation from its failed steps.
type RetryOperation struct {
	ID string
}

// DecideRetryOperation decides a retry: only a failed operation can be
// retried, and only when no other operation runs on its cluster.
func DecideRetryOperation(c *Cluster, r RetryOperation) ([]Event, error) {
	op := c.FindOperation(r.ID)
	if op == nil {
		return nil, Errorf(NotFound, "operation %s does not exist", r.ID)
	}
	if op.Status != OperationStatusFailed && op.Status != OperationStatusCancelled {
		return nil, Errorf(Conflict, "operation %s is %s: only a failed or cancelled operation can be retried", r.ID, op.Status)
	}
	if err := checkRetryImport(c, op); err != nil {
		return nil, err
	}
	if err := CheckIdle(c); err != nil {
		return nil, err
	}
	p := ProgressOf(op.Plan, op.Steps)
	return []Event{OperationRetried{ID: op.ID, Attempt: op.Attempt + 1, Steps: p.Failed}}, nil
}

// CheckIdle refuses a command that starts an operation while another runs
// on the cluster: one operation at a time per cluster.
func CheckIdle(c *Cluster) error {
	if op := c.ActiveOperation(); op != nil {
		return Errorf(Conflict, "cluster %s is busy with operation %s (%s, %s): wait for it to end or cancel it with POST /api/v1/operations/%s/cancel",
			c.Name, op.ID, op.Kind, op.Status, op.ID)
	}
	return nil
}

// DecideSettle records the outcome of an active operation that has
// nothing left to run (a cancel while nothing ran, or a new leader finding
// the last result already recorded), as the coordinator with token writer.
func DecideSettle(c *Cluster, id string, writer int64) ([]Event, error) {
	if writer < c.LeaderToken {
		return nil, Errorf(Conflict, "cluster %s is led by token %d; this coordinator's token %d is stale", c.Name, c.LeaderToken, writer)
	}
	op := c.FindOperation(id)
	if op == nil || !op.Active() {
		return nil, nil
	}
	return outcome(op), nil
}
