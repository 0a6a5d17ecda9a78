package domain

import (
	"fmt"
	"strings"
)

// DispatchRefusal says why a step message may not run: the committed
// events do not order it now. Agents check every step they are handed
// (CheckDispatch) and run nothing that the events refuse, so a step that
// was forged, replayed or aimed at another machine never runs.
type DispatchRefusal struct {
	Reason string
	// Unseen: the message names a leader, an operation, an attempt or a
	// finished dependency that the events read do not show. A reader whose
	// copy of the stream lags the dispatcher's (a replica answering a direct
	// get) may see it on a later read; every other refusal is final.
	Unseen bool
}

func (r *DispatchRefusal) Error() string { return r.Reason }

func refuse(format string, args ...any) error {
	return &DispatchRefusal{Reason: fmt.Sprintf(format, args...)}
}

func unseen(format string, args ...any) error {
	return &DispatchRefusal{Reason: fmt.Sprintf(format, args...), Unseen: true}
}

// CheckDispatch reports whether the cluster's committed state orders step
// stepID of operation opID in attempt, dispatched by the coordinator whose
// fencing token is token, and returns the step as the plan defines it.
// The token must be the cluster's leader token, the operation the
// cluster's active one; the rest is Operation.Dispatchable. A refusal is a
// *DispatchRefusal.
func (c *Cluster) CheckDispatch(opID, stepID string, attempt int, token int64) (Step, error) {
	switch {
	case token < c.LeaderToken:
		return Step{}, refuse("dispatched under leader token %d, but cluster %s is led by token %d since: a step of an earlier leader",
			token, c.Name, c.LeaderToken)
	case token > c.LeaderToken:
		return Step{}, unseen("dispatched under leader token %d, which the events of cluster %s do not show taking it over (its leader token is %d)",
			token, c.Name, c.LeaderToken)
	}
	op := c.FindOperation(opID)
	if op == nil {
		return Step{}, unseen("operation %s is not in the events of cluster %s", opID, c.Name)
	}
	if active := c.ActiveOperation(); active != op && op.Active() {
		// One operation runs at a time: unreachable unless the events break
		// that rule, and then nothing is run.
		return Step{}, refuse("operation %s is not the active operation of cluster %s (%s is)", opID, c.Name, active.ID)
	}
	if err := op.Dispatchable(stepID, attempt); err != nil {
		return Step{}, err
	}
	return *op.step(stepID), nil
}

// Dispatchable reports whether step stepID may run now in attempt: the
// operation runs (pending or running) in that very attempt and no cancel
// was asked for; the step is in its plan and has not finished; and every
// step it needs has succeeded, or it was started in this attempt already
// (a redelivery of a step whose agent went away). A refusal is a
// *DispatchRefusal.
func (o *Operation) Dispatchable(stepID string, attempt int) error {
	switch {
	case !o.Active():
		return refuse("operation %s is %s: its steps run no more", o.ID, o.Status)
	case attempt > o.Attempt:
		return unseen("attempt %d of operation %s is not in the events (the operation is at attempt %d)", attempt, o.ID, o.Attempt)
	case attempt < o.Attempt:
		return refuse("attempt %d of operation %s is over: the operation is at attempt %d", attempt, o.ID, o.Attempt)
	case o.Cancelling:
		return refuse("operation %s is being cancelled: nothing more runs", o.ID)
	}
	s := o.step(stepID)
	if s == nil {
		return refuse("operation %s has no step %q in its plan", o.ID, stepID)
	}
	st := o.Steps[stepID]
	switch st.Status {
	case StepStatusSucceeded, StepStatusFailed:
		return refuse("step %s of operation %s has %s already (attempt %d)", stepID, o.ID, st.Status, st.Attempt)
	case StepStatusRunning:
		if st.Attempt == attempt {
			return nil
		}
	}
	var waiting []string
	for _, n := range s.Needs {
		if o.Steps[n].Status != StepStatusSucceeded {
			waiting = append(waiting, n)
		}
	}
	if len(waiting) > 0 {
		return unseen("step %s of operation %s needs %s, which the events do not show succeeded", stepID, o.ID, strings.Join(waiting, ", "))
	}
	return nil
}
