package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestCLIPackageFileName(t *testing.T) {
	for _, tc := range []struct {
		file string
		want packageName
		err  string
	}{
		{file: "dm-v8.1.0.tar.gz", want: packageName{Name: "dm", Version: "v8.1.0"}},
		{file: "/tmp/x/dm-v8.1.0.tgz", want: packageName{Name: "dm", Version: "v8.1.0"}},
		{file: "dm-v8.1.0-linux-amd64.tar.gz", want: packageName{Name: "dm", Version: "v8.1.0", OS: "linux", Arch: "amd64"}},
		{file: "dm-v8.1.0-linux-arm64.tar.gz", want: packageName{Name: "dm", Version: "v8.1.0", OS: "linux", Arch: "arm64"}},
		{file: "dm-v8.1.0-hotfix.1.tar.gz", want: packageName{Name: "dm", Version: "v8.1.0-hotfix.1"}},
		{file: "dm-v5.0.0-rc.1-linux-amd64.tar.gz", want: packageName{Name: "dm", Version: "v5.0.0-rc.1", OS: "linux", Arch: "amd64"}},
		{file: "dm-tools-v1.2.3.tar.gz", want: packageName{Name: "dm-tools", Version: "v1.2.3"}},
		{file: "dm-v8.1.0.zip", err: "must end in .tar.gz"},
		{file: "dm-v8.1.tar.gz", err: "has no version"},
		{file: "dm-8.1.0.tar.gz", err: "has no version"},
		{file: "dm-v08.1.0.tar.gz", err: "has no version"},
		{file: "DM-v8.1.0.tar.gz", err: "must start with a lowercase letter"},
		{file: "-v8.1.0.tar.gz", err: "must start with a lowercase letter"},
		{file: "dm-v8.1.0-darwin-arm64.tar.gz", err: "is for darwin"},
		{file: "dm-v8.1.0-linux-386.tar.gz", err: "is for 386"},
		{file: "dm-v8.1.0-linux-amd64-extra.tar.gz", want: packageName{Name: "dm", Version: "v8.1.0-linux-amd64-extra"}}, // as the server reads it
	} {
		got, err := parsePackageFileName(tc.file)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want one that says %q", tc.file, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.file, err)
		case tc.err == "" && got != tc.want:
			t.Errorf("%s: %+v, want %+v", tc.file, got, tc.want)
		}
	}
}

// Tables are tiup's: header, a line of dashes as wide as each header,
// columns two spaces apart and as wide as their widest cell, no trailing
// spaces, no borders.
func TestCLITableTiupStyle(t *testing.T) {
	tb := NewTable("ID", "Role", "Status")
	tb.Row("10.0.0.1:8261", "dm-master", "Up|L")
	tb.Row("10.0.0.2:8262", "dm-worker") // a missing cell is empty
	tb.Row("a", "b", "c", "dropped")
	var b strings.Builder
	if err := tb.Write(&b); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"ID             Role       Status\n" +
		"--             ----       ------\n" +
		"10.0.0.1:8261  dm-master  Up|L\n" +
		"10.0.0.2:8262  dm-worker\n" +
		"a              b          c\n"
	if b.String() != want {
		t.Fatalf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	if tb.Len() != 3 {
		t.Errorf("Len %d", tb.Len())
	}
}

func TestCLIKeyValues(t *testing.T) {
	var b strings.Builder
	if err := KeyValues(&b, [2]string{"Cluster type", "dm"}, [2]string{"Cluster version", "v8.1.0"}); err != nil {
		t.Fatal(err)
	}
	want := "Cluster type:     dm\nCluster version:  v8.1.0\n"
	if b.String() != want {
		t.Fatalf("got %q, want %q", b.String(), want)
	}
}

func TestCLIPlainProgressLine(t *testing.T) {
	at := time.Date(2026, 12, 6, 4, 31, 2, 987654321, time.FixedZone("CST", 8*3600))
	for _, tc := range []struct {
		ev   Event
		want string
	}{
		{Event{Type: evStepSucceeded, Time: at, Step: "start/10.0.0.1:8261", Host: "10.0.0.1", Instance: "10.0.0.1:8261", Role: "dm-master", DurationMS: 1234},
			"2026-12-05T20:31:02Z  start/10.0.0.1:8261  10.0.0.1  dm-master-8261  succeeded  1.2s"},
		{Event{Type: evStepStarted, Time: at, Step: "check_host/10.0.0.1", Host: "10.0.0.1", Attempt: 1},
			"2026-12-05T20:31:02Z  check_host/10.0.0.1  10.0.0.1  -  started"},
		{Event{Type: evStepStarted, Time: at, Step: "start/[fd00::1]:8262", Host: "fd00::1", Instance: "[fd00::1]:8262", Role: "dm-worker", Attempt: 2},
			"2026-12-05T20:31:02Z  start/[fd00::1]:8262  fd00::1  dm-worker-8262  started  attempt 2"},
		{Event{Type: evStepFailed, Time: at, Step: "start/10.0.0.2:8262", Host: "10.0.0.2", Instance: "10.0.0.2:8262", Role: "dm-worker",
			DurationMS: 61000, ExitCode: 1, Error: "start dm-worker: not healthy\nafter 60s"},
			"2026-12-05T20:31:02Z  start/10.0.0.2:8262  10.0.0.2  dm-worker-8262  failed  1m1s  exit 1: start dm-worker: not healthy; after 60s"},
		{Event{Type: evStepSucceeded, Time: at, Step: "check_cluster", DurationMS: 40},
			"2026-12-05T20:31:02Z  check_cluster  -  -  succeeded  40ms"},
	} {
		if got := plainLine(tc.ev); got != tc.want {
			t.Errorf("plainLine:\n got %q\nwant %q", got, tc.want)
		}
	}
}

func TestCLIFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0ms", 850 * time.Millisecond: "850ms", 1200 * time.Millisecond: "1.2s",
		59*time.Second + 940*time.Millisecond: "59.9s", 63 * time.Second: "1m3s", 2*time.Hour + 400*time.Millisecond: "2h0m0s"} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

const displayCluster = `{"name":"prod-a","version":"v8.1.0","status":"running","group":"default","labels":{"env":"prod"},
 "topology":"server_configs:\n  master:\n    openapi: true\n",
 "global":{"user":"tidb","ssh_port":22,"arch":"","os":""},
 "instances":[
  {"id":"10.0.0.1:8261","role":"dm-master","host":"10.0.0.1","port":8261,"peer_port":8291,"deploy_dir":"/srv/dm/deploy/dm-master-8261","data_dir":"/srv/dm/data/dm-master-8261"},
  {"id":"10.0.0.2:8261","role":"dm-master","host":"10.0.0.2","port":8261,"peer_port":8291,"deploy_dir":"/srv/dm/deploy/dm-master-8261","data_dir":"/srv/dm/data/dm-master-8261","arch":"arm64"},
  {"id":"10.0.0.1:8262","role":"dm-worker","host":"10.0.0.1","port":8262,"deploy_dir":"/srv/dm/deploy/dm-worker-8262","data_dir":"/srv/dm/data/dm-worker-8262"},
  {"id":"10.0.0.3:3000","role":"grafana","host":"10.0.0.3","port":3000,"deploy_dir":"/srv/dm/deploy/grafana-3000","data_dir":""}]}`

const displayLive = `{"name":"prod-a","version":"v8.1.0","status":"running","instances":[
  {"id":"10.0.0.1:8261","role":"dm-master","host":"10.0.0.1","port":8261,"status":"Up"},
  {"id":"10.0.0.2:8261","role":"dm-master","host":"10.0.0.2","port":8261,"status":"Up|Leader"},
  {"id":"10.0.0.1:8262","role":"dm-worker","host":"10.0.0.1","port":8262,"status":"Up","stage":"bound","source":"mysql-1"}]}`

func TestCLIDisplayTiupStyle(t *testing.T) {
	var cl clusterDoc
	var live liveDoc
	if err := json.Unmarshal([]byte(displayCluster), &cl); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(displayLive), &live); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := writeDisplay(&b, cl, live); err != nil {
		t.Fatal(err)
	}
	want := `Cluster type:     dm
Cluster name:     prod-a
Cluster version:  v8.1.0
Deploy user:      tidb
SSH type:         builtin
Grafana URL:      http://10.0.0.3:3000
Dashboard URL:    http://10.0.0.2:8261/dashboard/
Status:           running
Group:            default
Labels:           env=prod
ID             Role       Host      Ports      OS/Arch        Status  Data Dir                     Deploy Dir                     Stage  Source
--             ----       ----      -----      -------        ------  --------                     ----------                     -----  ------
10.0.0.1:8261  dm-master  10.0.0.1  8261/8291  linux/x86_64   Up      /srv/dm/data/dm-master-8261  /srv/dm/deploy/dm-master-8261  -      -
10.0.0.2:8261  dm-master  10.0.0.2  8261/8291  linux/aarch64  Up|L    /srv/dm/data/dm-master-8261  /srv/dm/deploy/dm-master-8261  -      -
10.0.0.1:8262  dm-worker  10.0.0.1  8262       linux/x86_64   Up      /srv/dm/data/dm-worker-8262  /srv/dm/deploy/dm-worker-8262  bound  mysql-1
10.0.0.3:3000  grafana    10.0.0.3  3000       linux/x86_64   N/A     -                            /srv/dm/deploy/grafana-3000    -      -
Total nodes: 4
`
	if b.String() != want {
		t.Fatalf("display:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestCLIDeployPlanTable(t *testing.T) {
	raw := json.RawMessage(`{"dry_run":true,"plan":{"cluster":{"name":"prod-a","global":{"arch":"arm64"},"instances":[
	 {"id":"10.0.0.1:8261","role":"dm-master","host":"10.0.0.1","port":8261,"peer_port":8291,"deploy_dir":"/d/m","data_dir":"/x/m"},
	 {"id":"10.0.0.2:9090","role":"prometheus","host":"10.0.0.2","port":9090,"deploy_dir":"/d/p","data_dir":"/d/p"}]},
	 "steps":[{"id":"check_host/10.0.0.1","kind":"check_host","host":"10.0.0.1"},{"id":"check_host/10.0.0.2","kind":"check_host","host":"10.0.0.2"},
	 {"id":"start/10.0.0.1:8261","kind":"start","host":"10.0.0.1","instance":"10.0.0.1:8261"}]}}`)
	var b strings.Builder
	if err := showDeployPlan(&b, raw, "prod-a", "v8.1.0", "topo.yaml"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Cluster type:     dm\nCluster name:     prod-a\nCluster version:  v8.1.0\n",
		"Role        Host      Ports      OS/Arch        Directories\n----        ----      -----      -------        -----------\n",
		"dm-master   10.0.0.1  8261/8291  linux/aarch64  /d/m,/x/m\n",
		"prometheus  10.0.0.2  9090       linux/aarch64  /d/p\n",
		"Plan: 3 steps on 2 hosts",
		"check topo.yaml",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("plan lacks %q:\n%s", want, b.String())
		}
	}
	if _, err := decodePlan(json.RawMessage(`{"plan":{"steps":{}}}`)); err == nil {
		t.Error("a plan of the wrong shape decoded")
	}
}

func TestCLIStepsTable(t *testing.T) {
	var b strings.Builder
	err := writeStepsTable(&b, []PlanStep{
		{ID: "stop/h1:8262", Kind: "stop", Host: "h1", Instance: "h1:8262", Role: "dm-worker"},
		{ID: "offline/h1:8262", Kind: "offline", Host: "h1", Instance: "h1:8262"},
		{ID: "check_cluster", Kind: "check_cluster", Host: "h2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "Host  Instance  Role       Steps\n----  --------  ----       -----\nh1    h1:8262   dm-worker  stop, offline\nh2    -         -          check_cluster\nPlan: 3 steps on 2 hosts\n"
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestCLIServerConfigsEdit(t *testing.T) {
	old := map[string]map[string]any{"master": {"log-level": "info", "rpc-timeout": 30}}
	for _, tc := range []struct {
		text    string
		err     string
		changed bool
	}{
		{text: "# comment\nmaster:\n  log-level: info\n  rpc-timeout: 30\n", changed: false},
		{text: "master:\n  log-level: info\n  rpc-timeout: 30.0\nworker: {}\n", changed: false},
		{text: "master:\n  log-level: debug\n  rpc-timeout: 30\n", changed: true},
		{text: "master:\n  log-level: info\n  rpc-timeout: 30\nworker:\n  keepalive-ttl: 60\n", changed: true},
		{text: "master: [1, 2]\n", err: "section master: want a mapping"},
		{text: "master:\n  log-level: info\n bad indent: x\n", err: "not valid YAML"},
		{text: "master: {log-level: info\n", err: "not valid YAML"},
	} {
		got, err := parseServerConfigs([]byte(tc.text))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.text, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.text, err)
			continue
		}
		if changed := !sameConfigs(old, got); changed != tc.changed {
			t.Errorf("%q: changed %v, want %v", tc.text, changed, tc.changed)
		}
	}
}

func TestCLILabelsAndSelection(t *testing.T) {
	if _, err := parseLabels([]string{"env=prod", "env=dev"}); err == nil {
		t.Error("a label given twice was taken")
	}
	if _, err := parseLabels([]string{"=x"}); err == nil {
		t.Error("a label without key was taken")
	}
	if l, err := parseLabels([]string{"env=prod", "team=a=b"}); err != nil || l["team"] != "a=b" || l["env"] != "prod" {
		t.Errorf("labels %v %v", l, err)
	}
	if err := (selection{roles: []string{"dm-master", "tidb"}}).check(); err == nil || !strings.Contains(err.Error(), "-R tidb: not a role") {
		t.Errorf("an unknown role: %v", err)
	}
}

func TestCLITailLines(t *testing.T) {
	s := strings.Repeat("line\n", 30) + "last\n\n"
	got := tailLines(s, 3)
	if got != "line\nline\nlast" {
		t.Fatalf("tail %q", got)
	}
	if tailLines(" \n", 3) != "" {
		t.Fatal("blank output has a tail")
	}
}

// A failed operation ends with each failed step of its last attempt: its
// error and the tail of its output; the plain view leaves out the step
// events of earlier attempts when asked to.
func TestCLIFailureReportAndAttempts(t *testing.T) {
	tr := newTracker(operationView{Attempt: 2})
	var b strings.Builder
	v := &plainView{w: &b, fromAttempt: 2}
	for _, ev := range []Event{
		{Seq: 1, Type: evStepFailed, Step: "start/h1:8262", Host: "h1", Attempt: 1, Error: "old failure"},
		{Seq: 2, Type: evOperationRetried, Attempt: 2},
		{Seq: 3, Type: evStepStarted, Step: "start/h1:8262", Host: "h1", Attempt: 2},
		{Seq: 4, Type: evStepFailed, Step: "start/h1:8262", Host: "h1", Attempt: 2, ExitCode: 3, Error: "not healthy after 2s",
			Stderr: strings.Repeat("noise\n", 40) + "panic: port 8262 in use\n"},
	} {
		tr.apply(ev)
		v.event(ev, tr)
	}
	if lines := strings.Count(b.String(), "\n"); lines != 2 || strings.Contains(b.String(), "old failure") {
		t.Errorf("plain view from attempt 2:\n%s", b.String())
	}
	var f strings.Builder
	tr.writeFailures(&f)
	out := f.String()
	for _, want := range []string{"Error: step start/h1:8262 on h1 failed (exit 3): not healthy after 2s", "  stderr (last lines):\n", "    panic: port 8262 in use\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("failure report lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "noise") != 19 || strings.Contains(out, "old failure") || strings.Contains(out, "stdout") {
		t.Errorf("failure report:\n%s", out)
	}
}
