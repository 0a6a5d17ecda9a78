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

// StepReport is what an agent reports about a step it runs.
type StepReport struct {
	Operation  string
	Step       string
	Attempt    int
	Agent      string
	Finished   bool // false: the step started
	OK         bool
	ExitCode   int
	Error      string
	DurationMS int64
	Stdout     string
	Stderr     string
}

// DecideStepReport turns an agent's report into events. Reports of another
// attempt, of an operation that is over, of an unknown step, or repeated
// (a redelivered result) decide nothing: at-least-once delivery is normal.
// The report that settles the operation also records its outcome.
func DecideStepReport(c *Cluster, r StepReport) ([]Event, error) {
	op := c.FindOperation(r.Operation)
	if op == nil || !op.Active() || r.Attempt != op.Attempt {
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
	events := []Event{e}
	after := EvolveCluster(*c, e)
	done := after.FindOperation(op.ID)
	p := ProgressOf(done.Plan, done.Steps)
	if !p.Done {
		return events, nil
	}
	if len(p.Failed) == 0 {
		return append(events, OperationSucceeded{ID: op.ID, Attempt: op.Attempt}), nil
	}
	return append(events, OperationFailed{ID: op.ID, Attempt: op.Attempt, FailedSteps: p.Failed,
		Error: describeFailures(done, p.Failed)}), nil
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
	if op.Status != OperationStatusFailed {
		return nil, Errorf(Conflict, "operation %s is %s: only a failed operation can be retried", r.ID, op.Status)
	}
	if other := c.ActiveOperation(); other != nil {
		return nil, Errorf(Conflict, "cluster %s is busy with operation %s (%s); retry when it is over", c.Name, other.ID, other.Kind)
	}
	p := ProgressOf(op.Plan, op.Steps)
	return []Event{OperationRetried{ID: op.ID, Attempt: op.Attempt + 1, Steps: p.Failed}}, nil
}
