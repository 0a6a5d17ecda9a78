package projections

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/busauth"
)

// The test binary runs a projector as a child process when childEnv is
// set, so that a test can SIGKILL it at a chosen point of a batch.
const (
	childEnv      = "DMGR_PROJECTIONS_TEST_CHILD"
	childNATS     = "DMGR_PROJECTIONS_TEST_NATS"
	childNKey     = "DMGR_PROJECTIONS_TEST_NKEY" // seed file of the server role
	childCH       = "DMGR_PROJECTIONS_TEST_CH"
	childDB       = "DMGR_PROJECTIONS_TEST_DB"
	childStage    = "DMGR_PROJECTIONS_TEST_STAGE" // hook stage at which the child stops (and waits to be killed)
	childAfter    = "DMGR_PROJECTIONS_TEST_AFTER" // ...the n-th time it reaches it
	childStopLine = "STOPPED AT "
)

func childMain() int {
	ctx := context.Background()
	auth, err := busauth.ClientOptions(busauth.Identity{Role: busauth.Server}, os.Getenv(childNKey))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	nc, err := nats.Connect(os.Getenv(childNATS), auth...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	events, err := eventstore.Open(ctx, js, eventstore.Config{Replicas: 1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	conn, err := Dial(os.Getenv(childCH), testCH)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	log := zerolog.New(os.Stderr).Level(zerolog.InfoLevel)
	st, err := New(conn, Options{Database: os.Getenv(childDB), JS: js, Log: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	p := NewProjector(ProjectorConfig{Store: st, JS: js, Events: events, MaxBatch: 7, MaxWait: 5 * time.Millisecond, Log: log})
	stage := os.Getenv(childStage)
	after, _ := strconv.Atoi(os.Getenv(childAfter))
	var n atomic.Int64
	p.hook = func(s string) {
		if stage != "" && s == stage && n.Add(1) >= int64(after) {
			fmt.Println(childStopLine + s)
			select {} // hold everything until SIGKILL
		}
	}
	_ = p.Run(ctx)
	return 0
}

type child struct {
	cmd     *exec.Cmd
	stopped chan string
	stderr  *strings.Builder
	mu      sync.Mutex
}

func (e *env) startChild(stage string, after int) *child {
	e.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childNATS+"="+e.natsURL, childNKey+"="+e.natsSeed, childCH+"="+e.chAddr, childDB+"="+e.db,
		childStage+"="+stage, childAfter+"="+strconv.Itoa(after))
	out, err := cmd.StdoutPipe()
	must(e.t, err, "child stdout")
	c := &child{cmd: cmd, stopped: make(chan string, 1), stderr: &strings.Builder{}}
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.stderr.Write(p)
	})
	must(e.t, cmd.Start(), "start child projector")
	e.t.Cleanup(func() { c.kill() })
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), childStopLine); ok {
				c.stopped <- s
			}
		}
	}()
	return c
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// kill sends SIGKILL, as kill -9 does, and reaps the process.
func (c *child) kill() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	_ = c.cmd.Wait()
}

func (c *child) log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

// Acceptance 1: kill -9 of the projector in the middle of a batch (after
// some tables have the batch and before others do, after ClickHouse has
// all of it and before the ack, at random moments), and a restart: the
// event counts match and no audit query shows an event twice.
func TestKillNineMidBatchThenRestart(t *testing.T) {
	e := newEnv(t, "")
	s := newScenario(e)
	// Commands keep arriving during the whole test.
	stopLoad := make(chan struct{})
	loaded := e.load(100*time.Millisecond, stopLoad)
	s.run()
	for _, stage := range []string{"inserted " + tableEvents, "inserted " + tableSteps, "inserted progress", "acked"} {
		c := e.startChild(stage, 2)
		select {
		case got := <-c.stopped:
			t.Logf("child stopped at %q", got)
		case <-time.After(60 * time.Second):
			t.Fatalf("child never reached %q; its log:\n%s", stage, c.log())
		}
		c.kill()
	}
	for i := 0; i < 3; i++ {
		c := e.startChild("", 0)
		time.Sleep(time.Duration(200+rand.IntN(600)) * time.Millisecond)
		c.kill()
	}
	s.run2()
	close(stopLoad)
	t.Logf("%d commands arrived while the projector was killed and restarted", loaded())

	c := e.startChild("", 0)
	e.caughtUp(e.store, 60*time.Second)
	c.kill()

	n, commits := e.streamEvents()
	distinct, err := e.store.EventCount(e.ctx)
	must(t, err, "count")
	raw := e.rawEventRows(e.store)
	t.Logf("stream: %d events in %d commits; ClickHouse: %d distinct events in %d rows", n, commits, distinct, raw)
	if distinct != uint64(n) {
		t.Fatalf("ClickHouse has %d distinct events, the stream %d", distinct, n)
	}
	if all := e.allAudit(e.store, AuditQuery{Limit: 50}); len(all) != n {
		t.Fatalf("the audit trail shows %d events, the stream has %d", len(all), n)
	}
	for _, q := range []AuditQuery{{Cluster: "prod-a", Limit: 9}, {Actor: "carol", Limit: 13}, {Machine: s.machines[0]}} {
		e.allAudit(e.store, q) // fails on a duplicate
	}
	e.sameAnswers(e.store)
}

// run2 is more work on top of run: a third cluster, deployed and finished.
func (s *scenario) run2() {
	s.e.t.Helper()
	var hosts []string
	for i := 0; i < 2; i++ {
		h, _ := s.registerMachine("dave")
		hosts = append(hosts, h)
	}
	op := s.deploy(fmt.Sprintf("late-%d", len(s.clusters)), topologyOn(hosts...))
	s.runSteps(s.clusters[len(s.clusters)-1], op, 1, nil, 0)
}
