package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/testenv"
)

// dmgr server serves queries and the audit trail from ClickHouse, and
// `dmgr projections rebuild`, run beside it, switches it to fresh tables
// with the same answers.
func TestServerProjectionsAndRebuildCommand(t *testing.T) {
	const tok = "projections-token-123456"
	sm := startServerMode(t, tok)
	m, n, ch, ctx := sm.main, sm.nats, sm.ch, sm.ctx
	call := func(method, path, body string, hdr ...string) (int, http.Header, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, m.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}
	register := func(host string) uint64 {
		t.Helper()
		st, _, b := call("POST", "/api/v1/machines", `{"host":"`+host+`","user":"tidb","password":"pw","host_key":"`+testenv.HostKey+`"}`)
		if st != 202 {
			t.Fatalf("register %s: %d %s", host, st, b)
		}
		var acc struct {
			CommitSeq uint64 `json:"commit_seq"`
		}
		_ = json.Unmarshal(b, &acc)
		return acc.CommitSeq
	}
	var registered uint64
	for _, h := range []string{"198.18.0.11", "198.18.0.12", "198.18.0.13"} {
		registered = register(h)
	}
	answers := func() map[string]string {
		out := map[string]string{}
		for _, p := range []string{"/api/v1/machines", "/api/v1/operations", "/api/v1/audit?limit=2", "/api/v1/audit?actor=admin&type=MachineRegistered"} {
			st, hdr, b := call("GET", p, "")
			if st != 200 || hdr.Get("X-Dmgr-Seq") == "" {
				t.Fatalf("GET %s: %d %s", p, st, b)
			}
			out[p] = string(b)
		}
		return out
	}
	before := answers()
	if !strings.Contains(before["/api/v1/audit?actor=admin&type=MachineRegistered"], `"aggregate_id":"198.18.0.13"`) {
		t.Fatalf("audit: %s", before["/api/v1/audit?actor=admin&type=MachineRegistered"])
	}

	var out, errOut bytes.Buffer
	// A wrong ClickHouse password is refused before anything is rebuilt.
	projector := testenv.SeedFile(t, n, busauth.Projector, "")
	if err := run(ctx, []string{"projections", "rebuild", "--nats-url", n.URL(), "--nats-nkey-file", projector, "--clickhouse-addr", ch.Addr(),
		"--clickhouse-password-file", testenv.PasswordFile(t, "wrong")}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "refused the login of user dmgr") {
		t.Fatalf("rebuild with a wrong ClickHouse password: %v", err)
	}
	if err := run(ctx, append([]string{"projections", "rebuild", "--nats-url", n.URL(), "--nats-nkey-file", projector}, testenv.ClickHouseFlags(t, ch)...), &out, &errOut); err != nil {
		t.Fatalf("dmgr projections rebuild: %v\n%s", err, errOut.String())
	}
	// Every commit is replayed: the machines and the claims taken with
	// them, up to at least the last registration.
	var events, upTo uint64
	if _, err := fmt.Sscanf(out.String(), "projections rebuilt: generation 1 -> 2, %d events up to commit_seq %d", &events, &upTo); err != nil ||
		events != upTo || upTo < registered {
		t.Fatalf("rebuild said %q (%v); the last registration was commit %d", out.String(), err, registered)
	}
	// The server reads the new tables within a few seconds, with the same
	// answers; its projector carries them on.
	time.Sleep(2500 * time.Millisecond)
	after := answers()
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("GET %s after the rebuild:\n%s\nbefore:\n%s", k, after[k], v)
		}
	}
	seq := register("198.18.0.14")
	st, _, b := call("GET", "/api/v1/machines/198.18.0.14", "", "X-Dmgr-Min-Seq", strconv.FormatUint(seq, 10))
	if st != 200 {
		t.Fatalf("read-your-writes after the rebuild: %d %s", st, b)
	}
	resp, err := http.Get(m.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(mb), "dmgr_projection_generation 2\n") || !strings.Contains(string(mb), "dmgr_projection_lag_events 0\n") {
		t.Fatalf("metrics: %d\n%s", resp.StatusCode, mb)
	}
	if err := run(ctx, []string{"projections", "rebuild"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "--clickhouse-addr") {
		t.Fatalf("rebuild without ClickHouse: %v", err)
	}
	if err := run(ctx, []string{"projections", "frob"}, &out, &errOut); err == nil {
		t.Fatal("unknown projections command accepted")
	}
}
