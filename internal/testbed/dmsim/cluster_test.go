package dmsim

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCluster(t *testing.T) {
	dir := t.TempDir()
	names := []string{"m1", "m2", "m3"}
	client, peer := map[string]string{}, map[string]string{}
	var ic []string
	for _, n := range names {
		client[n], peer[n] = freeAddr(t), freeAddr(t)
		ic = append(ic, n+"=http://"+peer[n])
	}
	stop := map[string]func(){}
	for _, n := range names {
		cfg := MasterConfig{Name: n, MasterAddr: client[n], PeerURLs: "http://" + peer[n],
			InitialCluster: strings.Join(ic, ","), DataDir: filepath.Join(dir, n, "data"),
			LogFile: filepath.Join(dir, n, "log", "dm-master.log"), OpenAPI: n == "m1", Version: "v8.1.0"}
		stop[n] = startProc(t, func(ctx context.Context) error { return RunMaster(ctx, cfg) })
	}
	w1, w2 := freeAddr(t), freeAddr(t)
	startProc(t, func(ctx context.Context) error {
		return RunWorker(ctx, WorkerConfig{Name: "w1", WorkerAddr: w1, Join: client["m1"], Version: "v8.1.0",
			LogFile: filepath.Join(dir, "w1", "log", "dm-worker.log")})
	})
	// The first join address answers nothing: the worker must try the next.
	startProc(t, func(ctx context.Context) error {
		return RunWorker(ctx, WorkerConfig{Name: "w2", WorkerAddr: w2, Join: freeAddr(t) + ",http://" + client["m2"], Version: "v8.1.0"})
	})

	all := []string{client["m1"], client["m2"], client["m3"]}
	wantSummary(t, all, "m1|m1+,m2+,m3+|w1:free,w2:free")

	for _, a := range []string{client["m2"], w1} {
		_, body, err := httpDo("GET", "http://"+a+"/status")
		if err != nil || !strings.HasPrefix(string(body), "Release Version: v8.1.0\n") {
			t.Fatalf("status of %s: %q %v", a, body, err)
		}
	}

	r, _ := getMembers(client["m3"])
	if l := r.Members[0].Leader; l.Addr != client["m1"] {
		t.Errorf("leader addr %q, want %q", l.Addr, client["m1"])
	}
	if mi := r.Members[1].Master.Masters[1]; mi.ClientURLs[0] != "http://"+client["m2"] || mi.PeerURLs[0] != "http://"+peer["m2"] || mi.MemberID == "" {
		t.Errorf("master info %+v", mi)
	}
	if wi := r.Members[2].Worker.Workers[0]; wi.Addr != w1 || wi.Source != "" {
		t.Errorf("worker info %+v", wi)
	}

	t.Run("openapi", func(t *testing.T) {
		var ms openAPIList[clusterMaster]
		if err := getJSON(client["m1"], "/api/v1/cluster/masters", &ms); err != nil || ms.Total != 3 || !ms.Data[0].Leader || ms.Data[0].Name != "m1" {
			t.Fatalf("masters %+v %v", ms, err)
		}
		var ws openAPIList[clusterWorker]
		if err := getJSON(client["m1"], "/api/v1/cluster/workers", &ws); err != nil || ws.Total != 2 || ws.Data[1].BoundStage != "free" {
			t.Fatalf("workers %+v %v", ws, err)
		}
		if code, _, _ := httpDo("GET", "http://"+client["m2"]+"/api/v1/cluster/masters"); code != 404 {
			t.Fatalf("openapi off: got %d, want 404", code)
		}
	})

	m4 := freeAddr(t)
	startProc(t, func(ctx context.Context) error {
		return RunMaster(ctx, MasterConfig{Name: "m4", MasterAddr: m4, PeerURLs: "http://" + freeAddr(t), Join: client["m2"]})
	})
	all = append(all, m4)
	t.Run("join", func(t *testing.T) {
		wantSummary(t, all, "m1|m1+,m2+,m3+,m4+|w1:free,w2:free")
	})

	t.Run("offline worker", func(t *testing.T) {
		code, body, err := httpDo("DELETE", "http://"+client["m3"]+"/apis/v1alpha1/members/worker/w2")
		if err != nil || code != 200 || string(body) != `{"result":true,"msg":""}`+"\n" {
			t.Fatalf("delete: %d %s %v", code, body, err)
		}
		wantSummary(t, all, "m1|m1+,m2+,m3+,m4+|w1:free")
		_, body, _ = httpDo("DELETE", "http://"+client["m3"]+"/apis/v1alpha1/members/worker/nope")
		if !strings.Contains(string(body), `"result":false`) {
			t.Fatalf("delete unknown: %s", body)
		}
	})

	t.Run("leader fails over", func(t *testing.T) {
		stop["m1"]()
		wantSummary(t, all[1:], "m2|m1-,m2+,m3+,m4+|w1:free")
	})

	t.Run("offline master", func(t *testing.T) {
		if code, _, err := httpDo("DELETE", "http://"+client["m2"]+"/apis/v1alpha1/members/master/m1"); err != nil || code != 200 {
			t.Fatalf("delete m1: %d %v", code, err)
		}
		wantSummary(t, all[1:], "m2|m2+,m3+,m4+|w1:free")
	})

	t.Run("markers and logs", func(t *testing.T) {
		starts, _ := filepath.Glob(filepath.Join(dir, "m1", "data", "started-*"))
		if len(starts) != 1 {
			t.Errorf("m1 start markers: %v", starts)
		}
		if ws, _ := filepath.Glob(filepath.Join(dir, "w1", "log", "started-*")); len(ws) != 1 {
			t.Errorf("w1 start markers: %v", ws)
		}
		b, _ := os.ReadFile(filepath.Join(dir, "m1", "log", "dm-master.log"))
		for _, want := range []string{`"message":"dm-master started"`, `"name":"m1"`, `"version":"v8.1.0"`, `"message":"dm-master stopped"`} {
			if !strings.Contains(string(b), want) {
				t.Errorf("m1 log lacks %s:\n%s", want, b)
			}
		}
	})
}
