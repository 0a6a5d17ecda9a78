package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
)

// doAs is cp.do with bearer token tok.
func (cp *controlPlane) doAs(t testing.TB, tok, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, cp.baseURL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// Done when 2, on the test hosts: an operator asks to destroy an env=prod
// cluster and nothing happens on the hosts; they cannot approve it
// themselves; of 20 approvals at once by another operator, one starts the
// destroy, which runs once.
func TestApprovedDestroyRunsOnceOnTheTestHosts(t *testing.T) {
	bed := hosts.Start(t, 3)
	cp := startControlPlane(t)
	cp.prepareBed(t, bed)
	cp.runOperation(t, "POST", "/api/v1/clusters", map[string]any{"name": "prod", "version": "v8.1.0",
		"topology": threeHostTopology(bed, ""), "labels": map[string]string{"env": "prod"}})
	tokens := map[string]string{}
	for _, u := range []string{"oper", "oper2"} {
		if st := cp.api(t, "POST", "/api/v1/users", map[string]any{"name": u, "password": u + "-password-1"}, nil); st != http.StatusCreated {
			t.Fatalf("create %s: %d", u, st)
		}
		if st := cp.api(t, "PUT", "/api/v1/groups/default/members/"+u, map[string]any{"role": "operator"}, nil); st != http.StatusOK {
			t.Fatalf("member %s: %d", u, st)
		}
		st, body := cp.doAs(t, "", "POST", "/api/v1/login", map[string]any{"user": u, "password": u + "-password-1"})
		var ans struct{ Token string }
		if err := json.Unmarshal(body, &ans); st != http.StatusOK || err != nil {
			t.Fatalf("login %s: %d %s", u, st, body)
		}
		tokens[u] = ans.Token
	}
	onHosts := func() string {
		var b strings.Builder
		for i := 1; i <= 3; i++ {
			out, err := bed.Exec(t, i, "find /srv/dm/deploy /srv/dm/data -mindepth 1 -maxdepth 1 | wc -l; ps -o args= -u tidb | grep -c bin/ || true")
			if err != nil {
				t.Fatalf("host %d: %v", i, err)
			}
			b.WriteString(strings.Join(strings.Fields(out), " ") + ";")
		}
		return b.String()
	}
	before := onHosts()
	st, body := cp.doAs(t, tokens["oper"], "DELETE", "/api/v1/clusters/prod", nil)
	var held struct {
		ApprovalID string `json:"approval_id"`
		State      string `json:"state"`
	}
	if err := json.Unmarshal(body, &held); st != http.StatusAccepted || err != nil || held.State != "pending" {
		t.Fatalf("destroy of a prod cluster: %d %s", st, body)
	}
	time.Sleep(2 * time.Second) // long enough for a destroy that wrongly started to show on the hosts
	if now := onHosts(); now != before {
		t.Fatalf("the held destroy changed the hosts: %s, before %s", now, before)
	}
	if st, body := cp.doAs(t, tokens["oper"], "POST", "/api/v1/approvals/"+held.ApprovalID+"/approve", map[string]any{"comment": "mine"}); st != http.StatusForbidden {
		t.Fatalf("the requester approved: %d %s", st, body)
	}
	var (
		wg        sync.WaitGroup
		ok        atomic.Int32
		operation atomic.Value
	)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, body := cp.doAs(t, tokens["oper2"], "POST", "/api/v1/approvals/"+held.ApprovalID+"/approve", map[string]any{"comment": "ok"})
			switch st {
			case http.StatusOK:
				ok.Add(1)
				var a domain.Approval
				_ = json.Unmarshal(body, &a)
				operation.Store(a.OperationID)
			case http.StatusConflict:
			default:
				t.Errorf("approve: %d %s", st, body)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d of 20 approvals were accepted, want 1", ok.Load())
	}
	op := cp.waitOperation(t, operation.Load().(string), 3*time.Minute)
	if op.Status != domain.OperationStatusSucceeded || op.Kind != domain.OperationDestroy || op.Actor != "oper" {
		t.Fatalf("the approved destroy: %s %s by %s%s", op.Kind, op.Status, op.Actor, describeSteps(op))
	}
	if now := onHosts(); now != "0 0;0 0;0 0;" {
		t.Fatalf("after the approved destroy the hosts hold %s", now)
	}
	destroys := 0
	for _, e := range cp.clusterEvents(t, "prod") {
		if _, is := e.(domain.ClusterDestroyRequested); is {
			destroys++
		}
	}
	if destroys != 1 {
		t.Fatalf("%d destroys were committed, want 1", destroys)
	}
}
