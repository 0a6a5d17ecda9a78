package domain

import "time"

// OperationView is an operation as the API shows it.
type OperationView struct {
	ID            string    `json:"id"`
	Kind          string    `json:"kind"`
	Status        string    `json:"status"`
	Cluster       string    `json:"cluster,omitempty"`
	AggregateType string    `json:"aggregate_type"`
	AggregateID   string    `json:"aggregate_id"`
	Actor         string    `json:"actor"`
	CreatedAt     time.Time `json:"created_at"`
	CommitSeq     uint64    `json:"commit_seq"`
	Attempt       int       `json:"attempt,omitempty"`
	Error         string    `json:"error,omitempty"`
	// Steps is the plan with each step's state (GET of one operation only).
	Steps []StepView `json:"steps,omitempty"`
}

// StepView is one step of an operation as the API shows it.
type StepView struct {
	ID         string   `json:"id"`
	Kind       string   `json:"kind"`
	Host       string   `json:"host"`
	Instance   string   `json:"instance,omitempty"`
	Needs      []string `json:"needs,omitempty"`
	Status     string   `json:"status"` // pending, running, succeeded, failed
	Attempt    int      `json:"attempt,omitempty"`
	Agent      string   `json:"agent,omitempty"`
	Error      string   `json:"error,omitempty"`
	DurationMS int64    `json:"duration_ms,omitempty"`
}
