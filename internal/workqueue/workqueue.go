// Package workqueue is the JetStream side of running steps: the DMGR_STEPS
// work queue that the coordinator publishes ready steps to and agents pull
// from, and the DMGR_RESULTS stream that agents publish step results to and
// the coordinator consumes.
//
// A step message names its step and nothing else (Dispatch); agents take
// the step's definition, target and credential from the committed events,
// so the queue carries no instruction an agent trusts by itself.
//
// Delivery is at least once on both sides. Every message carries a
// Nats-Msg-Id derived from (operation, attempt, step), so a step published
// twice within the duplicate window is stored once, and every step is
// idempotent, so a redelivered step does no harm.
package workqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// Streams and subjects.
const (
	StepsStream    = "DMGR_STEPS"
	ResultsStream  = "DMGR_RESULTS"
	stepSubjects   = "dmgr.step.>"
	resultSubjects = "dmgr.result.>"

	// DefaultPool is the pool of agents that takes steps not routed
	// elsewhere.
	DefaultPool = "default"
)

// StepSubject is the subject of steps for agents of pool.
func StepSubject(pool string) string { return "dmgr.step." + eventstore.EscapeToken(pool) }

// ResultSubject is the subject of a cluster's step results.
func ResultSubject(cluster string) string { return "dmgr.result." + eventstore.EscapeToken(cluster) }

// AgentConsumer is the durable consumer shared by every agent of pool.
func AgentConsumer(pool string) string { return "agents-" + eventstore.EscapeToken(pool) }

// Dispatch is one step on the work queue. It names the step and nothing
// else: the agent reads the step's definition, its machine and the
// machine's credential from the committed events, and runs it only when
// the events and the cluster's leader key order it (package agents,
// verify.go). Whoever can publish to the queue can therefore make an
// agent run only what the store already ordered.
type Dispatch struct {
	Cluster   string `json:"cluster"`
	Operation string `json:"operation"`
	Attempt   int    `json:"attempt"`
	Token     int64  `json:"token"` // the dispatching leader's fencing token
	Step      string `json:"step"`  // the step's id in the operation's plan
}

// MsgID is the deduplication id of a dispatch.
func (d Dispatch) MsgID() string {
	return fmt.Sprintf("%s/%d/%d/%s", d.Operation, d.Attempt, d.Token, d.Step)
}

// MaxDispatchSize bounds a step message: its fields are names and ids.
const MaxDispatchSize = 4 << 10

// DecodeDispatch reads a step message strictly: one JSON object with
// exactly the members of Dispatch, spelled exactly (no unknown, repeated
// or case-folded member, nothing after the object), every one set. A
// message of an older format (with a target or a whole step definition)
// is refused, never read in part.
func DecodeDispatch(data []byte) (Dispatch, error) {
	var d Dispatch
	if len(data) > MaxDispatchSize {
		return d, fmt.Errorf("step message is %d bytes; at most %d are accepted", len(data), MaxDispatchSize)
	}
	if err := jsonv2.Unmarshal(data, &d, jsonv2.RejectUnknownMembers(true)); err != nil {
		return Dispatch{}, fmt.Errorf("step message is not {cluster, operation, attempt, token, step}: %w", err)
	}
	var missing []string
	for _, f := range []struct {
		name string
		ok   bool
	}{{"cluster", d.Cluster != ""}, {"operation", d.Operation != ""}, {"attempt", d.Attempt > 0},
		{"token", d.Token > 0}, {"step", d.Step != ""}} {
		if !f.ok {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return Dispatch{}, fmt.Errorf("step message lacks %s", strings.Join(missing, ", "))
	}
	return d, nil
}

// Result is what an agent reports about a step: once when it starts it
// (Finished false) and once when it is over.
type Result struct {
	Cluster    string    `json:"cluster"`
	Operation  string    `json:"operation"`
	Attempt    int       `json:"attempt"`
	Token      int64     `json:"token"` // of the dispatch
	Step       string    `json:"step"`
	Host       string    `json:"host"`
	Agent      string    `json:"agent"`
	Finished   bool      `json:"finished"`
	OK         bool      `json:"ok"`
	ExitCode   int       `json:"exit_code"`
	Error      string    `json:"error,omitempty"`
	Stdout     string    `json:"stdout,omitempty"` // tail
	Stderr     string    `json:"stderr,omitempty"` // tail
	DurationMS int64     `json:"duration_ms"`
	Time       time.Time `json:"time"`
}

// MsgID is the deduplication id of a result.
func (r Result) MsgID() string {
	phase := "started"
	if r.Finished {
		phase = "finished"
	}
	return fmt.Sprintf("%s/%d/%d/%s/%s/%s", r.Operation, r.Attempt, r.Token, r.Step, r.Agent, phase)
}

// Report turns a result into the domain's step report.
func (r Result) Report() domain.StepReport {
	return domain.StepReport{Operation: r.Operation, Step: r.Step, Attempt: r.Attempt, Token: r.Token, Agent: r.Agent,
		Finished: r.Finished, OK: r.OK, ExitCode: r.ExitCode, Error: r.Error, DurationMS: r.DurationMS,
		Stdout: r.Stdout, Stderr: r.Stderr}
}

// Config sizes the streams.
type Config struct {
	Replicas int
	// Duplicates is the window in which a re-published step or result is
	// dropped as a duplicate (default 1 h).
	Duplicates time.Duration
}

// Setup creates or updates both streams.
func Setup(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	if cfg.Duplicates <= 0 {
		cfg.Duplicates = time.Hour
	}
	streams := []jetstream.StreamConfig{
		{Name: StepsStream, Subjects: []string{stepSubjects}, Retention: jetstream.WorkQueuePolicy,
			Storage: jetstream.FileStorage, Replicas: cfg.Replicas, Duplicates: cfg.Duplicates,
			Description: "dmgr steps waiting for an agent"},
		{Name: ResultsStream, Subjects: []string{resultSubjects}, Retention: jetstream.LimitsPolicy,
			Storage: jetstream.FileStorage, Replicas: cfg.Replicas, Duplicates: cfg.Duplicates,
			MaxAge: 7 * 24 * time.Hour, Description: "dmgr step results from agents"},
	}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("workqueue: stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// PublishDispatch puts a step on pool's work queue.
func PublishDispatch(ctx context.Context, js jetstream.JetStream, pool string, d Dispatch) error {
	data, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode step %s: %w", d.Step, err)
	}
	if _, err := js.Publish(ctx, StepSubject(pool), data, jetstream.WithMsgID(d.MsgID())); err != nil {
		return fmt.Errorf("publish step %s of operation %s: %w", d.Step, d.Operation, err)
	}
	return nil
}

// PublishResult stores a result; it returns only when JetStream has it.
func PublishResult(ctx context.Context, js jetstream.JetStream, r Result) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode result of step %s: %w", r.Step, err)
	}
	if _, err := js.Publish(ctx, ResultSubject(r.Cluster), data, jetstream.WithMsgID(r.MsgID())); err != nil {
		return fmt.Errorf("publish result of step %s of operation %s: %w", r.Step, r.Operation, err)
	}
	return nil
}

// AgentConsumerConfig is the shared durable consumer of pool's agents.
// AckWait bounds how long a step may go without an in-progress ack before
// JetStream gives it to another agent.
func AgentConsumerConfig(pool string, ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       AgentConsumer(pool),
		FilterSubject: StepSubject(pool),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxAckPending: 10000,
		Description:   "agents of pool " + pool,
	}
}

// Decode reads a message body into v, naming the message on error.
func Decode(msg jetstream.Msg, v any) error {
	if err := json.Unmarshal(msg.Data(), v); err != nil {
		return fmt.Errorf("decode %s message: %w", msg.Subject(), err)
	}
	return nil
}
