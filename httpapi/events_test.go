package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/agents"
	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/httpapi"
	"github.com/dmgr/dmgr/internal/coordinator"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testbed/dmpkg"
	testbed "github.com/dmgr/dmgr/internal/testbed/hosts"
	"github.com/dmgr/dmgr/internal/testenv"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// sse is one server-sent event as a client parses it.
type sse struct {
	ID, Event, Data string
}

// fields decodes the event's data.
func (e sse) fields(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(e.Data), &m); err != nil {
		t.Fatalf("event %s: data is not a JSON object: %v\n%s", e.ID, err, e.Data)
	}
	return m
}

// sseStream is an open text/event-stream, parsed as an EventSource does.
type sseStream struct {
	t        testing.TB
	resp     *http.Response
	r        *bufio.Reader
	retry    []string // retry: lines
	comments []string
	cancel   context.CancelFunc
}

// openEvents opens an event stream at url with the admin token, unless
// opts change it. An answer that is not 200 is returned as a response.
func openEvents(t testing.TB, client *http.Client, url string, opts ...reqOpt) (*sseStream, response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for _, o := range opts {
		o(req)
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer cancel()
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return nil, response{status: resp.StatusCode, header: resp.Header, body: b}
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("GET %s: Content-Type %q", url, ct)
	}
	s := &sseStream{t: t, resp: resp, r: bufio.NewReader(resp.Body), cancel: cancel}
	t.Cleanup(s.close)
	return s, response{status: resp.StatusCode, header: resp.Header}
}

func (s *stack) events(path string, opts ...reqOpt) (*sseStream, response) {
	s.t.Helper()
	return openEvents(s.t, s.client, s.url+path, opts...)
}

// mustEvents opens a stream that must answer 200.
func (s *stack) mustEvents(path string, opts ...reqOpt) *sseStream {
	s.t.Helper()
	st, r := s.events(path, opts...)
	if st == nil {
		s.t.Fatalf("GET %s: %d %s", path, r.status, r.body)
	}
	return st
}

// close disconnects.
func (s *sseStream) close() {
	s.cancel()
	_ = s.resp.Body.Close()
}

// next reads the next event; io.EOF when the server closed the stream.
func (s *sseStream) next() (sse, error) {
	var ev sse
	seen := false
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			if err == io.EOF && line == "" && !seen {
				return sse{}, io.EOF
			}
			return sse{}, fmt.Errorf("read stream (partial line %q): %w", line, err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if seen {
				return ev, nil
			}
		case strings.HasPrefix(line, ":"):
			s.comments = append(s.comments, strings.TrimSpace(line[1:]))
		case strings.HasPrefix(line, "retry: "):
			s.retry = append(s.retry, line[len("retry: "):])
		case strings.HasPrefix(line, "id: "):
			ev.ID, seen = line[len("id: "):], true
		case strings.HasPrefix(line, "event: "):
			ev.Event, seen = line[len("event: "):], true
		case strings.HasPrefix(line, "data: "):
			if ev.Data != "" {
				return sse{}, fmt.Errorf("event %s has more than one data line", ev.ID)
			}
			ev.Data, seen = line[len("data: "):], true
		default:
			return sse{}, fmt.Errorf("unexpected line %q", line)
		}
	}
}

// mustNext reads the next event, failing on the end or an error.
func (s *sseStream) mustNext() sse {
	s.t.Helper()
	ev, err := s.next()
	if err != nil {
		s.t.Fatalf("read event: %v", err)
	}
	return ev
}

// rest reads events until the server closes the stream.
func (s *sseStream) rest() []sse {
	s.t.Helper()
	var out []sse
	for {
		ev, err := s.next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			s.t.Fatalf("after %d events: %v", len(out), err)
		}
		out = append(out, ev)
	}
}

// nextOf reads until an event of type typ, returning what it read.
func (s *sseStream) nextOf(typ string) []sse {
	s.t.Helper()
	var out []sse
	for {
		ev := s.mustNext()
		out = append(out, ev)
		if ev.Event == typ {
			return out
		}
	}
}

func ids(evs []sse) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func types(evs []sse) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Event
	}
	return out
}

// sameEvents fails unless got and want are the same events, in order.
func sameEvents(t testing.TB, what string, got, want []sse) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got %d events %v, want %d events %v", what, len(got), ids(got), len(want), ids(want))
	}
	seen := map[string]bool{}
	for _, e := range got {
		if seen[e.ID] {
			t.Fatalf("%s: event %s twice", what, e.ID)
		}
		seen[e.ID] = true
	}
}

// checkFormat checks what every event of a stream carries: an id that is
// its data's seq.index, in increasing order, the type in event: and data,
// the envelope.
func checkFormat(t testing.TB, cluster string, evs []sse) {
	t.Helper()
	var last service.EventPos
	for i, e := range evs {
		pos, err := service.ParseEventPos(e.ID)
		if err != nil {
			t.Fatalf("event %d: id %q: %v", i, e.ID, err)
		}
		if i > 0 && !(pos.Seq > last.Seq || pos.Seq == last.Seq && pos.Index > last.Index) {
			t.Fatalf("event %d: id %s does not come after %s", i, e.ID, last)
		}
		last = pos
		f := e.fields(t)
		if f["seq"] != float64(pos.Seq) || f["index"] != float64(pos.Index) || f["type"] != e.Event || f["cluster"] != cluster {
			t.Fatalf("event %s (%s): envelope %v does not match", e.ID, e.Event, f)
		}
		if _, err := time.Parse(time.RFC3339Nano, f["time"].(string)); err != nil || f["actor"] == "" {
			t.Fatalf("event %s: time or actor missing: %v", e.ID, f)
		}
	}
}

// coordinate acts as the coordinator of cluster in the tests without one:
// it leads the cluster (token 1) and records step reports.
type coordinate struct {
	t  testing.TB
	tc *service.TrackedCluster
}

func (s *stack) coordinate(cluster, op string) *coordinate {
	s.t.Helper()
	tc := s.svc.TrackCluster(cluster)
	if _, err := tc.Refresh(s.t.Context()); err != nil {
		s.t.Fatal(err)
	}
	if _, err := tc.TakeLeadership(s.t.Context(), op, 1, "test-coordinator"); err != nil {
		s.t.Fatal(err)
	}
	return &coordinate{t: s.t, tc: tc}
}

func (c *coordinate) refresh() domain.Cluster {
	c.t.Helper()
	if _, err := c.tc.Refresh(c.t.Context()); err != nil {
		c.t.Fatal(err)
	}
	st, _ := c.tc.State()
	return st
}

// run reports step started and finished (ok) in attempt.
func (c *coordinate) run(op, step string, attempt int, ok bool) {
	c.t.Helper()
	c.refresh()
	for _, fin := range []bool{false, true} {
		r := domain.StepReport{Operation: op, Step: step, Attempt: attempt, Token: 1, Agent: "agent-t", Finished: fin, OK: ok,
			DurationMS: 5, Stdout: "done " + step}
		if !ok && fin {
			r.ExitCode, r.Error = 3, "step "+step+" broke"
		}
		if _, _, err := c.tc.ReportStep(c.t.Context(), r, 1); err != nil {
			c.t.Fatalf("report %s: %v", step, err)
		}
	}
}

// finish runs every step of op not yet succeeded, in plan order.
func (c *coordinate) finish(op string, attempt int) {
	c.t.Helper()
	cl := c.refresh()
	o := cl.FindOperation(op)
	for _, st := range o.Plan {
		if o.Steps[st.ID].Status != domain.StepStatusSucceeded {
			c.run(op, st.ID, attempt, true)
		}
	}
	if cl = c.refresh(); cl.FindOperation(op).Status != domain.OperationStatusSucceeded {
		c.t.Fatalf("operation %s is %s after every step succeeded", op, cl.FindOperation(op).Status)
	}
}

// secretMarker is a config value of the test topologies: it is in the
// rendered files of the plan, and must never be in a stream.
const secretMarker = "s3cr3t-config-value-4711"

const topologyWithSecret = `global:
  user: tidb
  deploy_dir: /dm/deploy
  data_dir: /dm/data
server_configs:
  master:
    sim-note: ` + secretMarker + `
master_servers:
  - host: 198.18.0.11
worker_servers:
  - host: 198.18.0.12
`

// deploySecret deploys cluster name with topologyWithSecret on the
// fixtures' machines.
func (s *stack) deploySecret(name string) string {
	s.t.Helper()
	return s.mustAccept("POST", "/api/v1/clusters", map[string]any{"name": name, "version": "v8.1.0", "topology": topologyWithSecret}).OperationID
}

// An operation that failed and was retried is followed to the end of its
// latest attempt: a stream from its start passes the first attempt's
// OperationFailed and ends after the retry's OperationSucceeded; a stream
// that starts while it is failed replays up to that failure and ends;
// resuming after an operation's end is 204.
func TestOperationEventsFollowTheLatestAttempt(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	s.fixtures()
	op := s.deploySecret("prod-a")
	c := s.coordinate("prod-a", op)
	cl := c.refresh()
	plan := cl.FindOperation(op).Plan
	c.run(op, plan[0].ID, 1, true)

	// Attempt 1 fails: the coordinator gives up on it.
	if _, err := c.tc.AbandonOperation(t.Context(), domain.AbandonOperation{ID: op, Attempt: 1, Step: plan[1].ID, Reason: "host unreachable"}, 1); err != nil {
		t.Fatal(err)
	}
	failed := s.mustEvents("/api/v1/operations/" + op + "/events").rest()
	if got := types(failed); got[0] != domain.TypeClusterDeployRequested || !slices.Contains(got, domain.TypeOperationRequested) ||
		got[len(got)-1] != domain.TypeOperationFailed {
		t.Fatalf("stream of the failed operation: %v; want its request first and its failure last", got)
	}
	checkFormat(t, "prod-a", failed)
	if f := failed[len(failed)-1].fields(t); f["status"] != "failed" || f["attempt"] != 1.0 || f["operation"] != op ||
		!strings.Contains(f["error"].(string), "host unreachable") {
		t.Fatalf("failure event: %v", f)
	}

	// A stream opened now (attempt 2 runs) must not end at attempt 1's failure.
	s.mustAccept("POST", "/api/v1/operations/"+op+"/retry", nil)
	live := s.mustEvents("/api/v1/operations/" + op + "/events")
	sameEvents(t, "the replay of attempt 1", live.nextOf(domain.TypeOperationFailed), failed)
	if ev := live.mustNext(); ev.Event != domain.TypeOperationRetried || ev.fields(t)["attempt"] != 2.0 {
		t.Fatalf("after the failure: %s %s, want OperationRetried of attempt 2", ev.Event, ev.Data)
	}
	c.finish(op, 2)
	rest := live.rest()
	if len(rest) == 0 || rest[len(rest)-1].Event != domain.TypeOperationSucceeded {
		t.Fatalf("the stream of attempt 2 ended with %v, want OperationSucceeded last", types(rest))
	}
	end := rest[len(rest)-1]
	if f := end.fields(t); f["status"] != "succeeded" || f["attempt"] != 2.0 {
		t.Fatalf("end event: %v", f)
	}
	for _, e := range rest[:len(rest)-1] {
		if e.Event != domain.TypeStepStarted && e.Event != domain.TypeStepSucceeded {
			t.Fatalf("attempt 2 sent %s %s; want step events only before the end", e.Event, e.Data)
		}
		f := e.fields(t)
		if f["attempt"] != 2.0 || f["instance"] == nil || f["role"] == nil || f["kind"] == nil || f["host"] == "" || f["agent"] != "agent-t" {
			t.Fatalf("step event %s lacks its attempt, agent, instance, role or kind: %v", e.ID, f)
		}
		if e.Event == domain.TypeStepSucceeded && (f["duration_ms"] != 5.0 || !strings.HasPrefix(f["stdout"].(string), "done ")) {
			t.Fatalf("StepSucceeded %s lacks its duration or output: %v", e.ID, f)
		}
	}

	// The ended operation replays whole, once, and the stream closes.
	all := s.mustEvents("/api/v1/operations/" + op + "/events").rest()
	sameEvents(t, "the replay of the ended operation", all, slices.Concat(failed, []sse{all[len(failed)]}, rest))
	// Resumed after attempt 1's failure: attempt 2, to its end. The
	// header (an EventSource's reconnect) wins over the query parameter
	// the stream was first opened with.
	resumed := s.mustEvents("/api/v1/operations/"+op+"/events?last_event_id="+failed[0].ID,
		withHeader(httpapi.HeaderLastEventID, failed[len(failed)-1].ID)).rest()
	sameEvents(t, "resumed after the failure", resumed, all[len(failed):])
	// Resumed after the end: nothing more, ever: 204.
	if st, r := s.events("/api/v1/operations/"+op+"/events", withHeader(httpapi.HeaderLastEventID, end.ID)); st != nil || r.status != http.StatusNoContent {
		t.Fatalf("resumed after the end: %d %s, want 204", r.status, r.body)
	}

	// The slim plan and nothing secret.
	req := all[slices.IndexFunc(all, func(e sse) bool { return e.Event == domain.TypeOperationRequested })].fields(t)
	steps, _ := req["plan"].([]any)
	if req["kind"] != "deploy" || req["id"] != op || len(steps) != len(plan) {
		t.Fatalf("OperationRequested: %v", req)
	}
	for i, raw := range steps {
		st := raw.(map[string]any)
		for k := range st {
			if !slices.Contains([]string{"id", "kind", "host", "instance", "role", "needs"}, k) {
				t.Fatalf("plan step %d has %q: %v; the plan is sent slim", i, k, st)
			}
		}
		if st["id"] != plan[i].ID || st["kind"] != plan[i].Kind || st["host"] != plan[i].Host {
			t.Fatalf("plan step %d: %v, want %+v", i, st, plan[i])
		}
	}
	assertNoSecret(t, s, all)
}

// assertNoSecret fails when secretMarker is in a stream's events, and
// checks that it is in the event store (else the check proves nothing).
func assertNoSecret(t testing.TB, s *stack, evs []sse) {
	t.Helper()
	if raw := strings.Join(s.rawStream(), "\n"); !strings.Contains(raw, secretMarker) {
		t.Fatalf("the event store does not hold the config value %s: the test checks nothing", secretMarker)
	}
	for _, e := range evs {
		if strings.Contains(e.Data, secretMarker) || strings.Contains(e.Data, "sim-note") {
			t.Fatalf("event %s (%s) carries the topology's config: %s", e.ID, e.Event, e.Data)
		}
	}
}

// Refusals come before the first byte, as problem documents: no
// credentials 401, another group's operation or cluster 403 (recorded as
// AccessRefused), unknown ones 404, a malformed or impossible resume point
// 400, an operation that completed in its commit 409.
func TestEventStreamRefusals(t *testing.T) {
	tm := newTeam(t)
	opG1, opG2 := tm.ops["c-g1"], tm.ops["c-g2"]
	vic := as(tm.tokens["vic"])

	// vic (viewer in g1) watches g1's operation and cluster.
	if st := tm.mustEvents("/api/v1/operations/"+opG1+"/events", vic).nextOf(domain.TypeOperationRequested); st[len(st)-1].fields(t)["id"] != opG1 {
		t.Fatalf("vic's stream of %s: %v", opG1, ids(st))
	}
	tm.mustEvents("/api/v1/clusters/c-g1/events", vic).close()

	for _, path := range []string{"/api/v1/operations/" + opG2 + "/events", "/api/v1/clusters/c-g2/events"} {
		before := tm.lastSeq()
		_, r := tm.events(path, vic)
		if r.status != http.StatusForbidden || !strings.Contains(r.problem(t).Detail, "needs viewer") {
			t.Fatalf("vic GET %s: %d %s, want 403 saying viewer is needed", path, r.status, r.body)
		}
		after := tm.rawStreamAfter(before)
		if len(after) != 1 || !strings.Contains(after[0], `"type":"AccessRefused"`) || !strings.Contains(after[0], "dmgr.ev.access.vic") {
			t.Fatalf("after vic's refusal on %s the stream has %d new commits, want the refusal record:\n%s", path, len(after), strings.Join(after, "\n"))
		}
	}

	last := tm.lastSeq()
	machineOp := tm.mustAccept("POST", "/api/v1/machines", map[string]any{"host": "198.18.9.9", "user": "tidb", "host_key": testenv.HostKey, "password": "pw"}).OperationID
	opPath := "/api/v1/operations/" + opG1 + "/events"
	cases := []struct {
		name, path string
		opt        reqOpt
		status     int
		detail     string
	}{
		{"no credentials", opPath, noToken(), 401, ""},
		{"no credentials, cluster", "/api/v1/clusters/c-g1/events", noToken(), 401, ""},
		{"a wrong token", opPath, as("dmgr_nope"), 401, ""},
		{"unknown operation", "/api/v1/operations/0190b2a4-7c1e-7d2f-9a3b-4c5d6e7f8091/events", nil, 404, "does not exist"},
		{"not an operation id", "/api/v1/operations/op-1/events", nil, 400, "operation id"},
		{"unknown cluster", "/api/v1/clusters/nope/events", nil, 404, "does not exist"},
		{"an operation that completed in its commit", "/api/v1/operations/" + machineOp + "/events", nil, 409, "completed in its commit"},
		{"Last-Event-ID not seq.index", opPath, withHeader(httpapi.HeaderLastEventID, "12"), 400, "<seq>.<index>"},
		{"Last-Event-ID with words", opPath, withHeader(httpapi.HeaderLastEventID, "abc.def"), 400, "<seq>.<index>"},
		{"Last-Event-ID negative", opPath, withHeader(httpapi.HeaderLastEventID, "-1.0"), 400, "<seq>.<index>"},
		{"Last-Event-ID negative index", opPath, withHeader(httpapi.HeaderLastEventID, "3.-1"), 400, "<seq>.<index>"},
		{"Last-Event-ID three parts", opPath, withHeader(httpapi.HeaderLastEventID, "1.2.3"), 400, "<seq>.<index>"},
		{"Last-Event-ID signed", opPath, withHeader(httpapi.HeaderLastEventID, "+1.0"), 400, "<seq>.<index>"},
		{"Last-Event-ID spaces", opPath, withHeader(httpapi.HeaderLastEventID, "1. 0"), 400, "<seq>.<index>"},
		{"Last-Event-ID sequence 0", opPath, withHeader(httpapi.HeaderLastEventID, "0.0"), 400, "not a stream sequence"},
		{"Last-Event-ID overflowing", opPath, withHeader(httpapi.HeaderLastEventID, "99999999999999999999.0"), 400, "not a stream sequence"},
		{"Last-Event-ID huge index", opPath, withHeader(httpapi.HeaderLastEventID, "1.99999999"), 400, "larger than a commit holds"},
		{"Last-Event-ID past the end", opPath, withHeader(httpapi.HeaderLastEventID, fmt.Sprintf("%d.0", last+1000)), 400, "past the end of the event stream"},
		{"Last-Event-ID twice", opPath, func(r *http.Request) {
			r.Header.Add(httpapi.HeaderLastEventID, "1.0")
			r.Header.Add(httpapi.HeaderLastEventID, "2.0")
		}, 400, "more than once"},
		{"last_event_id malformed", opPath + "?last_event_id=1-2", nil, 400, "query parameter last_event_id"},
		{"since not a number", "/api/v1/clusters/c-g1/events?since=yesterday", nil, 400, "since"},
		{"since 0", "/api/v1/clusters/c-g1/events?since=0", nil, 400, "since"},
		{"since past the end", fmt.Sprintf("/api/v1/clusters/c-g1/events?since=%d", last+1000), nil, 400, "past the end of the event stream"},
		{"an unknown parameter", opPath + "?from=1", nil, 400, "unknown query parameter"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var opts []reqOpt
			if c.opt != nil {
				opts = append(opts, c.opt)
			}
			st, r := tm.events(c.path, opts...)
			if st != nil {
				t.Fatalf("GET %s: a stream, want %d", c.path, c.status)
			}
			if r.status != c.status {
				t.Fatalf("GET %s: %d %s, want %d", c.path, r.status, r.body, c.status)
			}
			if p := r.problem(t); !strings.Contains(p.Detail, c.detail) {
				t.Fatalf("GET %s: detail %q, want it to say %q", c.path, p.Detail, c.detail)
			}
		})
	}
}

// consumers is how many consumers the event stream has.
func (s *stack) consumers() int {
	s.t.Helper()
	st, err := s.js.Stream(s.t.Context(), eventstore.StreamName)
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := st.Info(s.t.Context())
	if err != nil {
		s.t.Fatal(err)
	}
	return info.State.Consumers
}

// waitConsumers waits until the event stream has n consumers. The bound
// is well below the 30 s after which the server drops an inactive
// consumer by itself: reaching n means the stream's consumer was deleted.
func (s *stack) waitConsumers(n int, why string) {
	s.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); s.consumers() != n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: the event stream has %d consumers, want %d", why, s.consumers(), n)
		}
	}
}

// A client that goes away stops the server's consumer at once: the event
// stream's consumer count goes back down, and the handler ends.
func TestEventStreamDisconnectStopsTheConsumer(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	s.fixtures()
	op := s.deploySecret("prod-a")
	first := s.mustEvents("/api/v1/operations/" + op + "/events")
	first.nextOf(domain.TypeOperationRequested)
	first.close()
	// What is left are the service's own tails of the stream: the
	// operation index's and the directory's.
	const base = 2
	s.waitConsumers(base, "with no stream open")

	for _, path := range []string{"/api/v1/operations/" + op + "/events", "/api/v1/clusters/prod-a/events"} {
		streams := make([]*sseStream, 5)
		for i := range streams {
			streams[i] = s.mustEvents(path)
		}
		s.waitConsumers(base+len(streams), "with 5 streams of "+path+" open")
		ended := strings.Count(s.logs.String(), "event stream ended")
		for _, st := range streams {
			st.close()
		}
		s.waitConsumers(base, "after the clients of "+path+" went")
		for deadline := time.Now().Add(10 * time.Second); strings.Count(s.logs.String(), "event stream ended") < ended+len(streams); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the handlers did not end after their clients went", path)
			}
		}
	}
}

// The cluster stream sends every commit of the cluster from now on (or
// from ?since=), lives at most StreamMaxLife and sends keepalives; a
// reconnect with Last-Event-ID misses nothing and repeats nothing; the
// server's WriteTimeout does not cut it.
func TestClusterEventsLifeKeepAliveAndResume(t *testing.T) {
	s := newStackWith(t, pkgstore.DefaultLimits(), func(_ *service.Config, hc *httpapi.Config) {
		hc.StreamMaxLife, hc.StreamKeepAlive = 2*time.Second, 150*time.Millisecond
	})
	// A server whose write and read timeouts are far shorter than a stream.
	srv := httptest.NewUnstartedServer(s.handler)
	srv.Config.WriteTimeout, srv.Config.ReadTimeout = 400*time.Millisecond, 400*time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	s.fixtures()
	op := s.deploySecret("prod-a")
	hist, err := s.store.Load(t.Context(), domain.AggregateCluster, "prod-a")
	if err != nil {
		t.Fatal(err)
	}
	deploySeq := hist.Events[0].Seq

	start := time.Now()
	st, _ := openEvents(t, srv.Client(), srv.URL+"/api/v1/clusters/prod-a/events")
	labels := func(v string) {
		if r := s.do("PUT", "/api/v1/clusters/prod-a/labels", map[string]any{"labels": map[string]string{"env": v}}); r.status != http.StatusOK {
			t.Fatalf("set labels: %d %s", r.status, r.body)
		}
	}
	labels("one")
	first := st.mustNext()
	if f := first.fields(t); first.Event != domain.TypeClusterLabelsSet || f["labels"].(map[string]any)["env"] != "one" {
		t.Fatalf("first event of a stream from now on: %s %s, want the labels set after it opened", first.Event, first.Data)
	}
	if rest := st.rest(); len(rest) != 0 {
		t.Fatalf("events after the labels: %v", types(rest))
	}
	lived := time.Since(start)
	if lived < 2*time.Second || len(st.comments) < 3 || st.comments[0] != "keepalive" || !slices.Equal(st.retry, []string{"2000"}) {
		t.Fatalf("stream lived %s with comments %v and retry %v; want its max life (2 s, 5x the write timeout), keepalives and retry: 2000 once",
			lived, st.comments, st.retry)
	}

	labels("two")
	labels("three")
	// Last-Event-ID wins over since= (the URL an EventSource reconnects to).
	resumed, _ := openEvents(t, srv.Client(), srv.URL+fmt.Sprintf("/api/v1/clusters/prod-a/events?since=%d", deploySeq),
		withHeader(httpapi.HeaderLastEventID, first.ID))
	got := []sse{resumed.mustNext(), resumed.mustNext()}
	for i, v := range []string{"two", "three"} {
		if f := got[i].fields(t); got[i].Event != domain.TypeClusterLabelsSet || f["labels"].(map[string]any)["env"] != v {
			t.Fatalf("resumed event %d: %s %s, want labels %s", i, got[i].Event, got[i].Data, v)
		}
	}
	resumed.close()

	// since= replays the deploy's commit and everything after it.
	c := s.coordinate("prod-a", op)
	c.finish(op, 1)
	replay, _ := openEvents(t, srv.Client(), srv.URL+fmt.Sprintf("/api/v1/clusters/prod-a/events?since=%d", deploySeq))
	evs := replay.nextOf(domain.TypeOperationSucceeded)
	checkFormat(t, "prod-a", evs)
	if evs[0].Event != domain.TypeClusterDeployRequested || !strings.HasPrefix(evs[0].ID, fmt.Sprintf("%d.", deploySeq)) {
		t.Fatalf("since=%d starts with %s %s", deploySeq, evs[0].ID, evs[0].Event)
	}
	want := []string{"one", "two", "three"}
	var gotLabels []string
	for _, e := range evs {
		if e.Event == domain.TypeClusterLabelsSet {
			gotLabels = append(gotLabels, e.fields(t)["labels"].(map[string]any)["env"].(string))
		}
	}
	if !slices.Equal(gotLabels, want) {
		t.Fatalf("since=%d replayed labels %v, want %v", deploySeq, gotLabels, want)
	}
	if f := evs[0].fields(t); f["topology"] != nil || f["instances"] == nil || f["name"] != "prod-a" {
		t.Fatalf("ClusterDeployRequested carries %v; want its name and slim instances, never the topology", f)
	}
	assertNoSecret(t, s, evs)
}

// Guard bounds the streams served at once: one more is 503 with
// Retry-After, and a slot is free again once a client goes.
func TestEventStreamsAreBounded(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	srv := httptest.NewServer(httpapi.Guard(httpapi.GuardConfig{MaxStreams: 2, MaxInFlight: 8, RequestTimeout: 10 * time.Second})(s.handler))
	t.Cleanup(srv.Close)
	s.fixtures()
	op := s.deploySecret("prod-a")
	a, _ := openEvents(t, srv.Client(), srv.URL+"/api/v1/clusters/prod-a/events")
	openEvents(t, srv.Client(), srv.URL+"/api/v1/operations/"+op+"/events")
	for _, path := range []string{"/api/v1/clusters/prod-a/events", "/api/v1/operations/" + op + "/events"} {
		st, r := openEvents(t, srv.Client(), srv.URL+path)
		if st != nil || r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" ||
			!strings.Contains(r.problem(t).Detail, "2 event streams") {
			t.Fatalf("a third stream (%s): %d %v %s, want 503 with Retry-After", path, r.status, r.header, r.body)
		}
	}
	// Plain requests are not counted with streams.
	if r := s.do("GET", "/api/v1/operations/"+op, nil); r.status != http.StatusOK {
		t.Fatalf("GET operation while the streams are full: %d", r.status)
	}
	a.close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, r := openEvents(t, srv.Client(), srv.URL+"/api/v1/clusters/prod-a/events")
		if st != nil {
			break
		}
		if r.status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("after a stream ended: %d %s", r.status, r.body)
		}
	}
}

// liveStack is a stack with a coordinator and an agent that run steps
// over SSH on real test hosts (network namespaces with sshd).
type liveStack struct {
	*stack
	bed *testbed.Bed
}

func newLiveStack(t *testing.T, n int) *liveStack {
	t.Helper()
	bed := testbed.Start(t, n)
	etcdSrv, etcd := testenv.Etcd(t)
	s := newStack(t, pkgstore.DefaultLimits())
	ctx, cancel := context.WithCancel(context.Background())
	if err := workqueue.Setup(ctx, s.js, workqueue.Config{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	pkgs, err := pkgstore.Open(ctx, s.js, 1)
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(s.logs).Level(zerolog.DebugLevel)
	coord := coordinator.New(coordinator.Config{ID: "coord-1", Service: s.svc, JS: s.js, Etcd: etcd, SessionTTL: 3 * time.Second,
		Log: log, RetryMin: 20 * time.Millisecond, RetryMax: 500 * time.Millisecond})
	agent, err := agents.New(agents.Config{ID: "agent-1", JS: s.js, Etcd: etcdSrv.AgentClient(t), Vault: s.vault, Packages: pkgs,
		Events: s.store, Remote: remote.NewPool(remote.Options{Log: log}), Log: log, AckWait: 5 * time.Second,
		RetryBackoff: 100 * time.Millisecond, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() { defer func() { done <- struct{}{} }(); _ = coord.Run(ctx) }()
	go func() { defer func() { done <- struct{}{} }(); _ = agent.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
		if t.Failed() {
			logs := s.logs.String()
			t.Logf("log (tail):\n%s", logs[max(0, len(logs)-8000):])
		}
	})
	for _, h := range bed.Hosts {
		s.mustAccept("POST", "/api/v1/machines", map[string]any{"host": h.Addr, "ssh_port": h.SSHPort, "user": "root",
			"private_key": string(h.RootKey), "host_key": h.HostKey})
	}
	s.mustAccept("POST", "/api/v1/packages?filename=dm-v8.1.0.tar.gz", dmpkg.Package(t, "v8.1.0"))
	return &liveStack{stack: s, bed: bed}
}

// liveTopology is a master and a worker on the test host: the master takes
// a second to start, so that the deploy runs a while. Its server_configs
// carry secretMarker.
func (ls *liveStack) liveTopology() string {
	h := ls.bed.Hosts[0].Addr
	return `global:
  deploy_dir: /srv/dm/deploy
  data_dir: /srv/dm/data
  service_manager: none
server_configs:
  master:
    sim-note: ` + secretMarker + `
master_servers:
  - host: ` + h + `
    config:
      sim-start-delay: 1s
worker_servers:
  - host: ` + h + `
`
}

// readAll reads a stream to its end without failing the test (for
// goroutines).
func readAll(client *http.Client, url string) ([]sse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	st := &sseStream{resp: resp, r: bufio.NewReader(resp.Body), cancel: cancel}
	var out []sse
	for {
		ev, err := st.next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ev)
	}
}

// A deploy run by a real agent on a test host, watched while it runs: an
// uninterrupted reader, 50 concurrent watchers, a reader that drops after
// a few events and resumes with Last-Event-ID and one that resumes with
// ?last_event_id= all get the same events, once each, ending with the
// operation's end, and the server closes every stream. Replayed after the
// end, half read and resumed, the same again. The cluster's stream sees
// the next operation (from now on, and replayed with ?since=), and ends
// after the cluster's destroy. No stream carries the topology's config.
func TestEventStreamsOfARealDeploy(t *testing.T) {
	ls := newLiveStack(t, 1)
	acc := ls.mustAccept("POST", "/api/v1/clusters", map[string]any{"name": "live", "version": "v8.1.0", "topology": ls.liveTopology()})
	op := acc.OperationID
	path := "/api/v1/operations/" + op + "/events"

	full := ls.mustEvents(path)
	const watchers = 50
	got := make([][]sse, watchers)
	errs := make([]error, watchers)
	done := make(chan int, watchers)
	for i := range watchers {
		go func() { got[i], errs[i] = readAll(ls.client, ls.url+path); done <- i }()
	}
	dropper := ls.mustEvents(path)
	head := []sse{dropper.mustNext(), dropper.mustNext(), dropper.mustNext()}
	dropper.close()
	byHeader := ls.mustEvents(path, withHeader(httpapi.HeaderLastEventID, head[2].ID))
	byQuery := ls.mustEvents(path + "?last_event_id=" + head[1].ID)

	want := full.rest()
	if len(want) < 10 || want[len(want)-1].Event != domain.TypeOperationSucceeded {
		t.Fatalf("the deploy's stream: %v; want its steps and OperationSucceeded last", types(want))
	}
	checkFormat(t, "live", want)
	t.Logf("the deploy's stream: %d events, %d step events of the agent; last %s", len(want),
		len(slices.DeleteFunc(slices.Clone(want), func(e sse) bool { return !strings.HasPrefix(e.Event, "Step") })), want[len(want)-1].Data)
	steps := map[string]bool{}
	for _, e := range want {
		f := e.fields(t)
		if f["operation"] != op {
			t.Fatalf("event %s %s is about operation %v, not %s", e.ID, e.Event, f["operation"], op)
		}
		if strings.HasPrefix(e.Event, "Step") {
			if f["agent"] != "agent-1" || f["instance"] == nil || f["kind"] == nil || f["role"] == nil {
				t.Fatalf("step event %s: %v; want the agent and the step's instance, role and kind", e.ID, f)
			}
			steps[e.Event] = true
		}
	}
	if !steps[domain.TypeStepStarted] || !steps[domain.TypeStepSucceeded] {
		t.Fatalf("the deploy's stream has no step started or succeeded: %v", types(want))
	}
	sameEvents(t, "dropped after 3 events, resumed with Last-Event-ID", append(head, byHeader.rest()...), want)
	sameEvents(t, "resumed with ?last_event_id=", append(head[:2], byQuery.rest()...), want)
	for range watchers {
		i := <-done
		if errs[i] != nil {
			t.Fatalf("watcher %d: %v (after %d events)", i, errs[i], len(got[i]))
		}
		sameEvents(t, fmt.Sprintf("watcher %d", i), got[i], want)
	}
	if v := ls.do("GET", "/api/v1/operations/"+op, nil); !strings.Contains(string(v.body), `"status":"succeeded"`) {
		t.Fatalf("the operation after its stream ended: %s", v.body)
	}

	// Replayed after the end: half, a disconnect, the rest.
	half := ls.mustEvents(path)
	first := make([]sse, len(want)/2)
	for i := range first {
		first[i] = half.mustNext()
	}
	half.close()
	second := ls.mustEvents(path, withHeader(httpapi.HeaderLastEventID, first[len(first)-1].ID)).rest()
	sameEvents(t, "replayed in two halves", append(first, second...), want)

	// The cluster's stream, from now on: the restart, not the deploy.
	cluster := ls.mustEvents("/api/v1/clusters/live/events")
	restart := ls.mustAccept("POST", "/api/v1/clusters/live/restart", map[string]any{}).OperationID
	restartEvs := cluster.nextOf(domain.TypeOperationSucceeded)
	checkFormat(t, "live", restartEvs)
	for _, e := range restartEvs {
		if f := e.fields(t); f["operation"] != restart {
			t.Fatalf("the cluster's stream from now on sent %s %s of operation %v; want the restart %s only", e.ID, e.Event, f["operation"], restart)
		}
	}
	if restartEvs[0].Event != domain.TypeOperationRequested || restartEvs[len(restartEvs)-1].fields(t)["operation"] != restart {
		t.Fatalf("the restart in the cluster's stream: %v", types(restartEvs))
	}
	// ?since= the deploy's first commit replays the deploy as its own
	// stream had it, then the restart.
	since := want[0].fields(t)["seq"].(float64)
	replay := ls.mustEvents(fmt.Sprintf("/api/v1/clusters/live/events?since=%d", int64(since)))
	var deployPart, restartPart []sse
	for len(restartPart) == 0 || restartPart[len(restartPart)-1].Event != domain.TypeOperationSucceeded {
		e := replay.mustNext()
		switch e.fields(t)["operation"] {
		case op:
			deployPart = append(deployPart, e)
		case restart:
			restartPart = append(restartPart, e)
		default:
			t.Fatalf("replay since %d: event %s %s of another operation", int64(since), e.ID, e.Event)
		}
	}
	sameEvents(t, "the deploy replayed by the cluster's stream", deployPart, want)
	sameEvents(t, "the restart replayed by the cluster's stream", restartPart, restartEvs)
	replay.close()

	// The destroy ends the cluster's stream after its end.
	destroy := ls.mustAccept("DELETE", "/api/v1/clusters/live", nil).OperationID
	last := cluster.rest()
	if len(last) == 0 {
		t.Fatal("the cluster's stream ended without the destroy's events")
	}
	if e := last[len(last)-1]; e.Event != domain.TypeOperationSucceeded || e.fields(t)["operation"] != destroy {
		t.Fatalf("the cluster's stream ended with %s %s; want the destroy's OperationSucceeded", e.ID, e.Data)
	}
	if _, r := ls.events("/api/v1/clusters/live/events"); r.status != http.StatusNotFound {
		t.Fatalf("the destroyed cluster's stream: %d %s, want 404", r.status, r.body)
	}
	assertNoSecret(t, ls.stack, slices.Concat(want, restartEvs, deployPart, last))
}
