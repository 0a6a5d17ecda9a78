package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/testbed/dmpkg"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
)

// agree checks that the live display, dm-master's members API and the
// processes on the hosts agree with the cluster view: every instance the
// view has is up (or down when down is true), the members are the view's
// masters and workers, and each host runs one process per instance.
func agree(t *testing.T, cp *controlPlane, bed *hosts.Bed, cluster, step string, down bool) {
	t.Helper()
	var c domain.Cluster
	if st := cp.api(t, "GET", "/api/v1/clusters/"+cluster, nil, &c); st != 200 {
		t.Fatalf("%s: cluster view: %d", step, st)
	}
	live := cp.live(t, cluster)
	status := map[string]string{}
	version := map[string]string{}
	for _, in := range live.Instances {
		status[in.ID], version[in.ID] = in.Status, in.Version
	}
	var masters, workers []string
	var anyMaster string
	perHost := map[string]map[string]int{}
	leaders := 0
	for _, in := range c.Instances {
		st := status[in.ID]
		switch {
		case down && st != "Down":
			t.Errorf("%s: %s %s is %q, want Down", step, in.Role, in.ID, st)
		case !down && !strings.HasPrefix(st, "Up"):
			t.Errorf("%s: %s %s is %q, want Up", step, in.Role, in.ID, st)
		}
		if st == "Up|Leader" {
			leaders++
		}
		if (in.Role == domain.RoleMaster || in.Role == domain.RoleWorker) && !down && version[in.ID] != c.Version {
			t.Errorf("%s: %s %s runs %q, the cluster view says %s", step, in.Role, in.ID, version[in.ID], c.Version)
		}
		switch in.Role {
		case domain.RoleMaster:
			masters = append(masters, in.Name)
			anyMaster = fmt.Sprintf("%s:%d", in.Host, in.Port)
		case domain.RoleWorker:
			workers = append(workers, in.Name)
		}
		if perHost[in.Host] == nil {
			perHost[in.Host] = map[string]int{}
		}
		perHost[in.Host][string(in.Role)]++
	}
	if len(live.Instances) != len(c.Instances) {
		t.Errorf("%s: live display has %d instances, the view %d", step, len(live.Instances), len(c.Instances))
	}
	if !down {
		if leaders != 1 {
			t.Errorf("%s: %d masters are Up|Leader, want 1", step, leaders)
		}
		slices.Sort(masters)
		slices.Sort(workers)
		gotM, gotW := members(t, anyMaster)
		if !slices.Equal(gotM, masters) || !slices.Equal(gotW, workers) {
			t.Errorf("%s: members API %v %v, cluster view %v %v", step, gotM, gotW, masters, workers)
		}
	}
	for i, h := range bed.Hosts {
		out, err := bed.Exec(t, i+1, "for p in dm-master dm-worker; do ps -o args= -u tidb | grep -c \"bin/$p \" || true; done")
		if err != nil {
			t.Fatal(err)
		}
		var m, w int
		fmt.Sscan(out, &m, &w)
		wantM, wantW := perHost[h.Addr]["dm-master"], perHost[h.Addr]["dm-worker"]
		if down {
			wantM, wantW = 0, 0
		}
		if m != wantM || w != wantW {
			t.Errorf("%s: host %s runs %d dm-master and %d dm-worker processes, want %d and %d", step, h.Addr, m, w, wantM, wantW)
		}
	}
}

// Acceptance 1 of the lifecycle: one cluster through its life on the test
// hosts; after each step the live display, the members API and the
// processes on the hosts agree with the cluster view.
func TestClusterWalksThroughItsLife(t *testing.T) {
	bed := hosts.Start(t, 3)
	cp := startControlPlane(t)
	cp.prepareBed(t, bed)
	for _, v := range []string{"v8.1.0-hotfix.1", "v8.5.0"} {
		cp.mustAccept(t, "POST", "/api/v1/packages?filename=dm-"+v+".tar.gz", dmpkg.Package(t, v))
	}
	h := func(i int) string { return bed.Hosts[i-1].Addr }

	cp.runOperation(t, "POST", "/api/v1/clusters", map[string]any{"name": "walk", "version": "v8.1.0", "topology": threeHostTopology(bed, "")})
	agree(t, cp, bed, "walk", "deploy", false)

	cp.runOperation(t, "POST", "/api/v1/clusters/walk/scale-out", map[string]any{"topology": fmt.Sprintf(
		"master_servers:\n  - host: %s\n    name: master4\n    port: 8361\n    peer_port: 8391\nworker_servers:\n  - host: %s\n    name: worker4\n    port: 8362\n  - host: %s\n    name: worker5\n    port: 8362\n",
		h(1), h(2), h(3))})
	agree(t, cp, bed, "walk", "scale-out", false)

	cp.runOperation(t, "POST", "/api/v1/clusters/walk/scale-in", map[string]any{"nodes": []string{h(1) + ":8361", h(3) + ":8362"}})
	agree(t, cp, bed, "walk", "scale-in", false)

	cp.runOperation(t, "POST", "/api/v1/clusters/walk/patch", map[string]any{"package": "dm-v8.1.0-hotfix.1-linux-amd64", "roles": []string{"dm-worker"}})
	for _, in := range cp.live(t, "walk").Instances {
		if in.Role == domain.RoleWorker && in.Version != "v8.1.0-hotfix.1" {
			t.Errorf("patch: worker %s runs %q, want the hotfix", in.ID, in.Version)
		}
	}

	cp.runOperation(t, "POST", "/api/v1/clusters/walk/upgrade", map[string]any{"version": "v8.5.0"})
	agree(t, cp, bed, "walk", "upgrade", false)

	cp.runOperation(t, "POST", "/api/v1/clusters/walk/stop", nil)
	agree(t, cp, bed, "walk", "stop", true)
	cp.runOperation(t, "POST", "/api/v1/clusters/walk/start", nil)
	agree(t, cp, bed, "walk", "start", false)
	cp.runOperation(t, "POST", "/api/v1/clusters/walk/restart", map[string]any{"roles": []string{"dm-worker"}})
	agree(t, cp, bed, "walk", "restart workers", false)
	cp.runOperation(t, "POST", "/api/v1/clusters/walk/reload", map[string]any{"server_configs": map[string]any{
		"master": map[string]any{"log-level": "warn"}, "worker": map[string]any{"log-level": "info"}}})
	agree(t, cp, bed, "walk", "reload", false)

	cp.runOperation(t, "DELETE", "/api/v1/clusters/walk", nil)
	for i := 1; i <= 3; i++ {
		out, _ := bed.Exec(t, i, "find /srv/dm -mindepth 2 | wc -l; ps -o args= -u tidb | grep -c bin/ || true")
		if strings.Join(strings.Fields(out), " ") != "0 0" {
			t.Errorf("destroy: host %d still has files or processes: %q", i, out)
		}
	}
	for _, hst := range bed.Hosts {
		cp.mustAccept(t, "DELETE", "/api/v1/machines/"+hst.Addr, nil)
	}
}
