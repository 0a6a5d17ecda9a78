package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testenv"
)

// inProcessDev is `dmgr dev` running inside the test process (embedded
// NATS and etcd, a local ClickHouse, the in-process agent), so that a test
// can count its goroutines and read its heap.
type inProcessDev struct {
	main   *Main
	url    string
	token  string
	logs   *testenv.Buffer
	client *http.Client
	tr     *http.Transport
}

// startInProcessDev runs dmgr dev in-process with extra flags after the
// test's own (loopback ports picked by the system; the agent tries a step
// once more, 10 ms later: --retries 0 means the default of 3).
func startInProcessDev(tb testing.TB, extra ...string) *inProcessDev {
	tb.Helper()
	if !slices.Contains(extra, "--clickhouse-addr") { // dev starts a local ClickHouse
		testenv.RequireClickHouse(tb)
	}
	args := append([]string{"--data-dir", tb.TempDir(), "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0",
		"--etcd-client-addr", "127.0.0.1:0", "--etcd-peer-addr", "127.0.0.1:0", "--retries", "1", "--retry-backoff", "10ms",
		"--ssh-dial-timeout", "2s", "--log-level", "info"}, extra...)
	cfg, err := parseConfig("dev", args, io.Discard)
	if err != nil {
		tb.Fatal(err)
	}
	d := &inProcessDev{logs: &testenv.Buffer{}, tr: &http.Transport{MaxIdleConnsPerHost: 64}}
	d.client = &http.Client{Transport: d.tr}
	d.main = NewMain(cfg, zerolog.New(d.logs).With().Timestamp().Logger().Level(zerolog.InfoLevel), io.Discard)
	if err := d.main.Run(testenv.Context(tb, 10*time.Minute)); err != nil {
		_ = d.main.Close()
		tb.Fatalf("dmgr dev: %v\n%s", err, tailOf(d.logs.String(), 4000))
	}
	d.url, d.token = d.main.URL, d.main.AdminToken
	tb.Cleanup(func() {
		d.close(tb)
		if dir := os.Getenv("DMGR_TEST_LOG_DIR"); dir != "" {
			_ = os.WriteFile(filepath.Join(dir, "dev.log"), []byte(d.logs.String()), 0o644)
		}
		if tb.Failed() {
			tb.Logf("dev log (tail):\n%s", tailOf(d.logs.String(), 8000))
		}
	})
	return d
}

// close stops dmgr dev (once) and drops the client's connections.
func (d *inProcessDev) close(tb testing.TB) {
	if d.main == nil {
		return
	}
	if err := d.main.Close(); err != nil {
		tb.Errorf("close dmgr dev: %v", err)
	}
	d.main = nil
	d.tr.CloseIdleConnections()
}

// answer is one HTTP exchange.
type answer struct {
	status     int
	retryAfter string
	body       []byte
	took       time.Duration
}

// do sends a request with the admin token; a transport error is returned.
func (d *inProcessDev) do(method, path string, body []byte, header map[string]string, timeout time.Duration) (answer, error) {
	req, err := http.NewRequest(method, d.url+path, bytes.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+d.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	c := *d.client
	c.Timeout = timeout
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: b, took: time.Since(start)}, err
}

func (d *inProcessDev) mustDo(tb testing.TB, method, path string, body any, want int) []byte {
	tb.Helper()
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			tb.Fatal(err)
		}
	}
	a, err := d.do(method, path, data, nil, 2*time.Minute)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	if a.status != want {
		tb.Fatalf("%s %s: %d %s, want %d", method, path, a.status, a.body, want)
	}
	return a.body
}

// registerLoopback registers n machines on loopback addresses
// 127.0.1.1, 127.0.1.2, … whose SSH port (9, discard) has no listener:
// every step on them fails at once.
func (d *inProcessDev) registerLoopback(tb testing.TB, n int) []string {
	tb.Helper()
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250)
		d.mustDo(tb, "POST", "/api/v1/machines", map[string]any{"host": hosts[i], "ssh_port": 9, "user": "tidb",
			"password": "pw", "host_key": testenv.HostKey}, http.StatusAccepted)
	}
	return hosts
}

// goroutineDump is every goroutine's stack.
func goroutineDump() string {
	buf := make([]byte, 1<<22)
	return string(buf[:runtime.Stack(buf, true)])
}

// settledGoroutines waits for the goroutine count to drop to at most want
// (goroutines take a moment to end after Close) and returns the count.
func settledGoroutines(want int) int {
	n := runtime.NumGoroutine()
	for i := 0; i < 300 && n > want; i++ {
		time.Sleep(100 * time.Millisecond)
		runtime.GC()
		n = runtime.NumGoroutine()
	}
	return n
}

// Done-when 5: 200 parallel deploys (each on a machine no SSH server
// listens on, so every deploy fails fast) and slow-loris clients against
// dmgr dev with small limits. Every request answers within its deadline
// with 2xx, 409 or 503 and Retry-After; the slow clients are cut off by
// the server; every accepted deploy ends failed (or succeeded) with a
// reason; and once dmgr is closed, no goroutine of it is left.
func TestParallelDeploysAndSlowClientsGetAnAnswerAndLeaveNothingRunning(t *testing.T) {
	const (
		deploys        = 200
		requestTimeout = 10 * time.Second
		slack          = 10 * time.Second // what a request may take on top of its deadline (a loaded 2-core machine)
	)
	runtime.GC()
	before := runtime.NumGoroutine()
	d := startInProcessDev(t, "--http-max-concurrent", "48", "--http-request-timeout", requestTimeout.String(),
		"--http-write-timeout", "20s", "--http-read-header-timeout", "2s", "--http-read-timeout", "5s", "--concurrency", "16")
	hosts := d.registerLoopback(t, deploys)
	if a, err := d.do("POST", "/api/v1/packages?filename=dm-v8.1.0.tar.gz", testenv.DMPackage(t, "v8.1.0"),
		map[string]string{"Content-Type": "application/gzip"}, 2*time.Minute); err != nil || a.status != http.StatusAccepted {
		t.Fatalf("upload: %v %d %s", err, a.status, a.body)
	}
	addr := strings.TrimPrefix(d.url, "http://")

	// Slow clients: one trickles its headers, one its body.
	headerLoris := slowLoris(addr, "GET /api/v1/clusters HTTP/1.1\r\nHost: dmgr\r\nX-Slow: ")
	bodyLoris := slowLoris(addr, "POST /api/v1/machines HTTP/1.1\r\nHost: dmgr\r\nAuthorization: Bearer "+d.token+
		"\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"host\":\"")

	var (
		mu       sync.Mutex
		counts   = map[int]int{}
		problems []string
		accepted = map[string]string{} // operation → cluster
		slowest  time.Duration
	)
	answered := func(what string, a answer, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: no answer within %s: %v", what, requestTimeout+slack, err))
			return
		case a.status == http.StatusServiceUnavailable && a.retryAfter == "":
			problems = append(problems, fmt.Sprintf("%s: 503 without Retry-After: %s", what, a.body))
		case a.status/100 != 2 && a.status != http.StatusConflict && a.status != http.StatusServiceUnavailable:
			problems = append(problems, fmt.Sprintf("%s: %d %s", what, a.status, a.body))
		}
		counts[a.status]++
		slowest = max(slowest, a.took)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range deploys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("load-%03d", i)
			body, _ := json.Marshal(map[string]string{"name": name, "version": "v8.1.0", "topology": fmt.Sprintf(
				"global:\n  deploy_dir: /srv/%s\n  service_manager: none\nmaster_servers:\n  - host: %s\n", name, hosts[i])})
			<-start
			for try := 0; try < 10; try++ {
				a, err := d.do("POST", "/api/v1/clusters", body, map[string]string{"Idempotency-Key": "deploy-" + name}, requestTimeout+slack)
				answered("deploy "+name, a, err)
				if err != nil || a.status != http.StatusServiceUnavailable {
					if err == nil && a.status == http.StatusAccepted {
						var acc service.Accepted
						if err := json.Unmarshal(a.body, &acc); err != nil || acc.OperationID == "" {
							answered("deploy "+name, a, fmt.Errorf("202 without an operation: %s", a.body))
							return
						}
						mu.Lock()
						accepted[acc.OperationID] = name
						mu.Unlock()
					}
					return
				}
				wait, _ := strconv.Atoi(a.retryAfter)
				time.Sleep(time.Duration(wait) * time.Second)
			}
		}()
	}
	close(start)
	wg.Wait()
	t.Logf("deploys: answers %v, %d accepted, slowest answer %s", counts, len(accepted), slowest)
	if len(problems) > 0 {
		t.Fatalf("%d bad answers:\n%s", len(problems), strings.Join(problems, "\n"))
	}
	if len(accepted) == 0 {
		t.Fatal("no deploy was accepted")
	}
	for name, ch := range map[string]<-chan lorisResult{"header": headerLoris, "body": bodyLoris} {
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("slow %s client: %v", name, r.err)
			}
			t.Logf("slow %s client: closed by the server after %s and %d bytes sent; it answered %q", name, r.after, r.sent, firstLine(r.got))
			if name == "header" && len(r.got) != 0 {
				t.Fatalf("slow header client got an answer: %q", r.got)
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("slow %s client: the server did not close its connection", name)
		}
	}

	// Every accepted deploy ends, failed with the reason (its machine has
	// no SSH server) or succeeded.
	ended := map[string]domain.OperationView{}
	for deadline := time.Now().Add(5 * time.Minute); len(ended) < len(accepted); time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d accepted deploys did not end", len(accepted)-len(ended), len(accepted))
		}
		// Every page: the list answers at most 100 operations at a time.
		for cursor := ""; ; {
			path := "/api/v1/operations?kind=deploy&limit=100"
			if cursor != "" {
				path += "&cursor=" + url.QueryEscape(cursor)
			}
			a, err := d.do("GET", path, nil, nil, requestTimeout+slack)
			answered("list operations", a, err)
			if len(problems) > 0 {
				t.Fatal(problems)
			}
			if a.status != http.StatusOK {
				break
			}
			var page struct {
				Items      []domain.OperationView `json:"items"`
				NextCursor string                 `json:"next_cursor"`
			}
			if err := json.Unmarshal(a.body, &page); err != nil {
				t.Fatal(err)
			}
			for _, op := range page.Items {
				if _, ok := accepted[op.ID]; ok && (op.Status == domain.OperationStatusSucceeded || op.Status == domain.OperationStatusFailed) {
					ended[op.ID] = op
				}
			}
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
	}
	for id, op := range ended {
		if op.Status == domain.OperationStatusFailed && (op.Error == "" || !strings.Contains(op.Error, "step check/")) {
			t.Fatalf("deploy %s of %s failed without a reason naming its step: %q", id, accepted[id], op.Error)
		}
	}
	t.Logf("every accepted deploy ended, e.g. %q", ended[firstKey(ended)].Error)

	// Nothing of dmgr is left running once it is closed.
	d.close(t)
	const tolerance = 5
	if after := settledGoroutines(before + tolerance); after > before+tolerance {
		t.Fatalf("%d goroutines before dmgr dev started, %d after it closed (tolerance %d):\n%s", before, after, tolerance, goroutineDump())
	} else {
		t.Logf("goroutines: %d before, %d after", before, after)
	}
}

func firstKey[V any](m map[string]V) string {
	for k := range m {
		return k
	}
	return ""
}

func firstLine(b []byte) string {
	line, _, _ := strings.Cut(string(b), "\r\n")
	return line
}

// lorisResult is how a slow client's connection ended.
type lorisResult struct {
	err   error // nil: the server closed the connection
	after time.Duration
	sent  int    // bytes trickled after the head
	got   []byte // what the server answered before closing
}

// slowLoris opens a raw TCP connection, sends head, then one byte every
// 200 ms, until the server closes the connection.
func slowLoris(addr, head string) <-chan lorisResult {
	out := make(chan lorisResult, 1)
	go func() {
		start := time.Now()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			out <- lorisResult{err: err}
			return
		}
		defer conn.Close()
		if _, err := conn.Write([]byte(head)); err != nil {
			out <- lorisResult{err: fmt.Errorf("send the head: %w", err)}
			return
		}
		read := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(bufio.NewReader(conn)) // EOF or reset: the server closed it
			read <- b
		}()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		safety := time.After(2 * time.Minute)
		sent := 0
		for {
			select {
			case got := <-read:
				out <- lorisResult{after: time.Since(start), sent: sent, got: got}
				return
			case <-tick.C:
				if _, err := conn.Write([]byte("a")); err == nil {
					sent++
				}
			case <-safety:
				out <- lorisResult{err: errors.New("the server kept the connection open for 2 minutes")}
				return
			}
		}
	}()
	return out
}

// Bodies and headers past the configured limits, a topology past the
// instance cap, and a request beyond the concurrency cap are refused with
// what is wrong, and change nothing.
func TestRequestsPastTheLimitsAreRefused(t *testing.T) {
	d := startInProcessDev(t, "--max-package-bytes", "1048576", "--http-max-header-bytes", "8192",
		"--http-max-concurrent", "1", "--agent=false")
	hosts := d.registerLoopback(t, 1)
	problem := func(what string, a answer, err error, status int, code, detail string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		var p struct{ Code, Detail string }
		_ = json.Unmarshal(a.body, &p)
		if a.status != status || p.Code != code || !strings.Contains(p.Detail, detail) {
			t.Fatalf("%s: %d %s, want %d %s with %q", what, a.status, a.body, status, code, detail)
		}
	}
	big := append(append([]byte(`{"name":"big","version":"v8.1.0","topology":"`), bytes.Repeat([]byte("x"), 1<<20)...), `"}`...)
	a, err := d.do("POST", "/api/v1/clusters", big, nil, time.Minute)
	problem("a JSON body past 1 MiB", a, err, http.StatusRequestEntityTooLarge, "too_large", "larger than the limit of 1048576 bytes")
	req, _ := http.NewRequest("POST", d.url+"/api/v1/clusters", io.MultiReader(bytes.NewReader(big))) // no length: chunked
	req.Header.Set("Authorization", "Bearer "+d.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	problem("a chunked JSON body past 1 MiB", answer{status: resp.StatusCode, body: body}, nil, http.StatusRequestEntityTooLarge, "too_large", "larger than the limit")

	pkg := bytes.Repeat([]byte{0x1f}, 2<<20)
	a, err = d.do("POST", "/api/v1/packages?filename=dm-v8.1.0.tar.gz", pkg, map[string]string{"Content-Type": "application/gzip"}, time.Minute)
	problem("an upload past --max-package-bytes", a, err, http.StatusRequestEntityTooLarge, "too_large", "larger than the limit of 1048576 bytes")

	a, err = d.do("GET", "/api/v1/clusters", nil, map[string]string{"X-Big": strings.Repeat("h", 16<<10)}, time.Minute)
	if err != nil || a.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("a header block past --http-max-header-bytes: %v %d %s", err, a.status, a.body)
	}

	// A topology one instance past the cap is refused before anything else
	// is looked at (no package is uploaded here).
	var b strings.Builder
	b.WriteString("master_servers:\n  - host: " + hosts[0] + "\nworker_servers:\n")
	for i := 1; i < 501; i++ {
		fmt.Fprintf(&b, "  - host: %s\n    port: %d\n", hosts[0], 20000+i)
	}
	deploy, _ := json.Marshal(map[string]string{"name": "big", "version": "v8.1.0", "topology": b.String()})
	for _, path := range []string{"/api/v1/clusters?dry_run=true", "/api/v1/clusters"} {
		a, err = d.do("POST", path, deploy, nil, time.Minute)
		problem("POST "+path+" of 501 instances", a, err, http.StatusBadRequest, "invalid",
			"topology has 501 instances, more than the limit of 500 instances per cluster")
	}

	// With --http-max-concurrent 1, a request that is still sending its
	// body holds the only slot: the next one answers 503 at once.
	conn, err := net.Dial("tcp", strings.TrimPrefix(d.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "POST /api/v1/machines HTTP/1.1\r\nHost: dmgr\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", d.token); err != nil {
		t.Fatal(err)
	}
	var full answer
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		// The held request reaches its handler a moment after its headers.
		if full, err = d.do("GET", "/api/v1/clusters", nil, nil, time.Minute); err != nil || full.status == http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
	}
	problem("a request past --http-max-concurrent", full, err, http.StatusServiceUnavailable, "unavailable", "the server is serving 1 requests at once, its limit")
	if full.retryAfter != "1" {
		t.Fatalf("503 with Retry-After %q, want 1", full.retryAfter)
	}
	if a, err := d.do("GET", "/healthz", nil, nil, time.Minute); err != nil || a.status != http.StatusOK {
		t.Fatalf("/healthz while the server is full: %v %d", err, a.status)
	}
	conn.Close()

	// Nothing was recorded: no cluster, no package.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		a, err = d.do("GET", "/api/v1/clusters", nil, nil, time.Minute)
		if err == nil && a.status == http.StatusOK || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || a.status != http.StatusOK || !strings.Contains(string(a.body), `"items":[]`) {
		t.Fatalf("clusters after the refusals: %v %d %s", err, a.status, a.body)
	}
	if body := d.mustDo(t, "GET", "/api/v1/packages", nil, http.StatusOK); !strings.Contains(string(body), `"items":[]`) {
		t.Fatalf("packages after the refusals: %s", body)
	}
}

// serverArgs are the flags dmgr server needs to parse (its logins; the
// files are not read while parsing), followed by extra.
func serverArgs(extra ...string) []string {
	return append([]string{"--clickhouse-addr", "127.0.0.1:9000", "--clickhouse-password-file", "/nonexistent/ch",
		"--etcd-password-file", "/nonexistent/etcd", "--nats-nkey-file", "/nonexistent/nk"}, extra...)
}

// The bounds' flags have working defaults and refuse values that would
// defeat them, saying which flag is wrong.
func TestLimitFlags(t *testing.T) {
	c, err := parseConfig("server", serverArgs(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.http.requestTimeout != 30*time.Second || c.http.writeTimeout <= c.http.requestTimeout || c.http.maxInFlight != 256 ||
		c.http.readHeaderTimeout <= 0 || c.http.idleTimeout <= 0 || c.http.maxHeaderBytes <= 0 ||
		c.limits.maxInstances != domain.DefaultMaxInstancesPerCluster || c.limits.advanceGiveUp <= 0 {
		t.Fatalf("defaults: %+v %+v", c.http, c.limits)
	}
	if _, err := parseConfig("agent", []string{"--http-request-timeout", "1s"}, io.Discard); err == nil {
		t.Fatal("the agent took an HTTP server flag")
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--http-request-timeout", "60s"}, "--http-write-timeout (1m0s) must be longer than --http-request-timeout"},
		{[]string{"--http-read-header-timeout", "0s"}, "--http-read-header-timeout must be positive"},
		{[]string{"--http-max-concurrent", "0"}, "--http-max-concurrent and --http-max-streams must be at least 1"},
		{[]string{"--http-max-header-bytes", "100"}, "--http-max-header-bytes must be at least 4096"},
		{[]string{"--http-min-upload-rate", "10"}, "--http-min-upload-rate must be at least 1024"},
		{[]string{"--max-instances-per-cluster", "0"}, "--max-instances-per-cluster must be at least 1"},
		{[]string{"--advance-retry-min", "1s", "--advance-retry-max", "500ms"}, "--advance-retry-max (500ms) must not be shorter than --advance-retry-min (1s)"},
		{[]string{"--advance-give-up-after", "0s"}, "--advance-give-up-after and --advance-retry-min must be positive"},
	} {
		_, err := parseConfig("dev", tt.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want %q", tt.args, err, tt.want)
		}
	}
}
