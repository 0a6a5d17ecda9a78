package dmsim

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseMasterFlags(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "dm-master.toml")
	os.WriteFile(conf, []byte(`# comment
name = "m1"
master-addr = ":8261" # trailing
advertise-addr = '10.0.0.1:8261'
peer-urls = "http://10.0.0.1:8291"
initial-cluster = "m1=http://10.0.0.1:8291,m2=http://10.0.0.2:8291"
openapi = true
rpc-timeout = "30s"
labels = [
  "a",
]
[security]
name = "ignored"
`), 0o644)
	tests := []struct {
		name    string
		args    []string
		want    MasterConfig
		wantErr string
	}{
		{name: "config file", args: []string{"--config", conf},
			want: MasterConfig{ConfigFile: conf, Name: "m1", MasterAddr: ":8261", AdvertiseAddr: "10.0.0.1:8261",
				PeerURLs: "http://10.0.0.1:8291", AdvertisePeerURLs: "http://10.0.0.1:8291",
				InitialCluster: "m1=http://10.0.0.1:8291,m2=http://10.0.0.2:8291", OpenAPI: true}},
		{name: "flags override file, unknown flags ignored",
			args: []string{"--config=" + conf, "--name", "m9", "-master-addr=10.0.0.9:8261", "--L=debug", "--log-level", "info", "--data-dir", "/d", "--log-file=/l/m.log"},
			want: MasterConfig{ConfigFile: conf, Name: "m9", MasterAddr: "10.0.0.9:8261", AdvertiseAddr: "10.0.0.1:8261",
				PeerURLs: "http://10.0.0.1:8291", AdvertisePeerURLs: "http://10.0.0.1:8291",
				InitialCluster: "m1=http://10.0.0.1:8291,m2=http://10.0.0.2:8291", OpenAPI: true,
				DataDir: "/d", LogFile: "/l/m.log", Ignored: []string{"--L=debug", "--log-level info"}}},
		{name: "defaults", args: []string{"--name=m1", "--master-addr=127.0.0.1:1"},
			want: MasterConfig{Name: "m1", MasterAddr: "127.0.0.1:1", AdvertiseAddr: "127.0.0.1:1",
				PeerURLs: "http://127.0.0.1:8291", AdvertisePeerURLs: "http://127.0.0.1:8291", InitialCluster: "m1=http://127.0.0.1:8291"}},
		{name: "join", args: []string{"--name=m4", "--master-addr=:8261", "--advertise-addr=10.0.0.4:8261", "--peer-urls=http://10.0.0.4:8291", "--join", "10.0.0.1:8261,10.0.0.2:8261"},
			want: MasterConfig{Name: "m4", MasterAddr: ":8261", AdvertiseAddr: "10.0.0.4:8261", PeerURLs: "http://10.0.0.4:8291",
				AdvertisePeerURLs: "http://10.0.0.4:8291", Join: "10.0.0.1:8261,10.0.0.2:8261"}},
		{name: "version", args: []string{"-V"}, want: MasterConfig{PrintVersion: true}},
		{name: "missing value", args: []string{"--name"}, wantErr: "needs a value"},
		{name: "bad addr", args: []string{"--master-addr=8261"}, wantErr: "master-addr"},
		{name: "bad initial cluster", args: []string{"--initial-cluster=m1"}, wantErr: "initial-cluster"},
		{name: "missing config", args: []string{"--config=/nope.toml"}, wantErr: "read config file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMasterFlags(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseWorkerFlags(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "dm-worker.toml")
	os.WriteFile(conf, []byte("name = \"w1\"\nworker-addr = \"0.0.0.0:8262\"\njoin = \"10.0.0.1:8261\"\n"), 0o644)
	got, err := ParseWorkerFlags([]string{"--config", conf, "--advertise-addr=10.0.0.5:8262", "--log-file", "/l/w.log", "--relay-dir=x"})
	want := WorkerConfig{ConfigFile: conf, Name: "w1", WorkerAddr: "0.0.0.0:8262", AdvertiseAddr: "10.0.0.5:8262",
		Join: "10.0.0.1:8261", LogFile: "/l/w.log", Ignored: []string{"--relay-dir=x"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v %v\nwant %+v", got, err, want)
	}
	if _, err := ParseWorkerFlags([]string{"--name=w1"}); err == nil || !strings.Contains(err.Error(), "--join") {
		t.Fatalf("want missing --join error, got %v", err)
	}
}

// TestBinaries builds both programs and cmd/dmsim with a version set by
// -ldflags, checks -V (and --version of dmsim installed as prometheus), and
// runs dm-master from a config file until SIGTERM.
func TestBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	bin := t.TempDir()
	for _, p := range []string{"dm-master", "dm-worker"} {
		cmd := exec.Command("go", "build", "-ldflags", "-X github.com/dmgr/dmgr/internal/testbed/dmsim.Version=v9.9.9", "-o", filepath.Join(bin, p), "./cmd/"+p)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", p, err, out)
		}
		cmd = exec.Command(filepath.Join(bin, p), "-V")
		cmd.Env = append(os.Environ(), "DMSIM_VERSION=")
		out, err := cmd.Output()
		if err != nil || !strings.HasPrefix(string(out), "Release Version: v9.9.9\n") {
			t.Fatalf("%s -V: %q %v", p, out, err)
		}
	}

	// cmd/dmsim runs the program it is installed as.
	cmd := exec.Command("go", "build", "-ldflags", "-X github.com/dmgr/dmgr/internal/testbed/dmsim.Version=v9.9.9", "-o", filepath.Join(bin, "dmsim"), "./cmd/dmsim")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build dmsim: %v\n%s", err, out)
	}
	if err := os.Link(filepath.Join(bin, "dmsim"), filepath.Join(bin, "prometheus")); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(filepath.Join(bin, "prometheus"), "--version")
	cmd.Env = append(os.Environ(), "DMSIM_VERSION=")
	if out, err := cmd.Output(); err != nil || !strings.HasPrefix(string(out), "prometheus, version v9.9.9 ") {
		t.Fatalf("prometheus --version: %q %v", out, err)
	}

	dir := t.TempDir()
	addr, peer := freeAddr(t), freeAddr(t)
	conf := filepath.Join(dir, "dm-master.toml")
	os.WriteFile(conf, []byte("name = \"m1\"\nmaster-addr = \""+addr+"\"\npeer-urls = \"http://"+peer+"\"\n"), 0o644)
	logFile := filepath.Join(dir, "log", "dm-master.log")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd = exec.CommandContext(ctx, filepath.Join(bin, "dm-master"), "--config", conf, "--log-file", logFile, "--data-dir", filepath.Join(dir, "data"), "-L=info")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "dm-master /status", func() error {
		_, body, err := httpDo("GET", "http://"+addr+"/status")
		if err == nil && !strings.HasPrefix(string(body), "Release Version: v9.9.9") {
			t.Fatalf("status %q", body)
		}
		return err
	})
	wantSummary(t, []string{addr}, "m1|m1+|")
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("dm-master exit after SIGTERM: %v", err)
	}
	f, _ := os.Open(logFile)
	defer f.Close()
	var lines []string
	for sc := bufio.NewScanner(f); sc.Scan(); {
		lines = append(lines, sc.Text())
	}
	if len(lines) < 3 || !strings.Contains(strings.Join(lines, "\n"), "ignoring unknown flag") || !strings.Contains(lines[len(lines)-1], "dm-master stopped") {
		t.Fatalf("log:\n%s", strings.Join(lines, "\n"))
	}
}
