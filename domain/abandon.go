package domain

import "unicode/utf8"

// maxAbandonReason bounds the reason an abandoned operation records, so
// that an error text never makes an event too large for the store.
const maxAbandonReason = 2000

// AbandonOperation is the coordinator giving up on an active operation it
// could not advance: a step result it could not record, a step it could
// not dispatch, a decision that keeps failing. Step names the step the
// failure is about, if any.
type AbandonOperation struct {
	ID      string
	Attempt int
	Step    string
	Reason  string
}

// DecideAbandonOperation fails an active operation with the reason, as the
// coordinator whose fencing token is writer: the named step (unless it has
// finished) and every running step are recorded failed with the reason, so
// that a retry of the operation runs them again, then the operation fails
// with it. An operation that is over, or another attempt, decides nothing;
// a writer older than the cluster's leader is refused.
func DecideAbandonOperation(c *Cluster, a AbandonOperation, writer int64) ([]Event, error) {
	if writer < c.LeaderToken {
		return nil, Errorf(Conflict, "cluster %s is led by token %d; this coordinator's token %d is stale", c.Name, c.LeaderToken, writer)
	}
	op := c.FindOperation(a.ID)
	if op == nil || !op.Active() || a.Attempt != op.Attempt {
		return nil, nil
	}
	reason := truncateReason(a.Reason)
	if reason == "" {
		reason = "the coordinator could not advance the operation"
	}
	var evs []Event
	for _, s := range op.Plan {
		st := op.Steps[s.ID]
		if st.Status == StepStatusRunning || (s.ID == a.Step && st.Status == StepStatusPending) {
			evs = append(evs, StepFailed{Operation: op.ID, Step: s.ID, Attempt: op.Attempt, Host: s.Host,
				Agent: "coordinator", Error: reason})
		}
	}
	f := NewClusterFold(*c)
	for _, e := range evs {
		f.Apply(e)
	}
	after := f.State()
	p := after.FindOperation(op.ID).Progress()
	return append(evs, OperationFailed{ID: op.ID, Attempt: op.Attempt, FailedSteps: p.Failed,
		Error: "the coordinator gave up on the operation: " + reason}), nil
}

// truncateReason cuts a reason to maxAbandonReason bytes on a rune
// boundary.
func truncateReason(s string) string {
	if len(s) <= maxAbandonReason {
		return s
	}
	cut := maxAbandonReason
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
