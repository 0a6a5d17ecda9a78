package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
)

// members asks a dm-master of the cluster for its masters and workers.
func members(t testing.TB, addr string) (masters, workers []string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/apis/v1alpha1/members?master=true&worker=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m struct {
		Members []struct {
			Master *struct{ Masters []struct{ Name string } } `json:"master"`
			Worker *struct{ Workers []struct{ Name string } } `json:"worker"`
		} `json:"members"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	for _, x := range m.Members {
		if x.Master != nil {
			for _, y := range x.Master.Masters {
				masters = append(masters, y.Name)
			}
		}
		if x.Worker != nil {
			for _, y := range x.Worker.Workers {
				workers = append(workers, y.Name)
			}
		}
	}
	slices.Sort(masters)
	slices.Sort(workers)
	return masters, workers
}

// promTargets lists what the cluster's prometheus scrapes.
func promTargets(t testing.TB, addr string) []string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/api/v1/targets")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Data struct {
			ActiveTargets []struct {
				Labels map[string]string `json:"labels"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, x := range v.Data.ActiveTargets {
		out = append(out, x.Labels["instance"])
	}
	return out
}

// Scale-out of a master and two workers, then scale-in of a master and a
// worker: the members API, the scrape targets, the processes and the
// directories on the hosts follow the cluster view; refusals change
// nothing.
func TestScaleOutAndIn(t *testing.T) {
	bed := hosts.Start(t, 3)
	cp := startControlPlane(t)
	cp.prepareBed(t, bed)
	cp.runOperation(t, "POST", "/api/v1/clusters", map[string]any{"name": "sc", "version": "v8.1.0", "topology": threeHostTopology(bed, "")})
	h := func(i int) string { return bed.Hosts[i-1].Addr }
	prom := h(3) + ":9090"

	fragment := fmt.Sprintf("master_servers:\n  - host: %s\n    name: master4\n    port: 8361\n    peer_port: 8391\nworker_servers:\n  - host: %s\n    name: worker4\n    port: 8362\n  - host: %s\n    name: worker5\n    port: 8362\n", h(1), h(2), h(3))
	var plan struct {
		Plan struct{ Steps []domain.Step } `json:"plan"`
	}
	if st := cp.api(t, "POST", "/api/v1/clusters/sc/scale-out?dry_run=true", map[string]any{"topology": fragment}, &plan); st != 200 {
		t.Fatalf("scale-out dry run: %d", st)
	}
	for _, s := range plan.Plan.Steps {
		if s.ID == "config/"+h(1)+":8361" {
			if toml := s.Files[0].Content; !strings.Contains(toml, "join = ") || strings.Contains(toml, "initial-cluster") {
				t.Errorf("a new master must join the running ones:\n%s", toml)
			}
		}
	}
	cp.runOperation(t, "POST", "/api/v1/clusters/sc/scale-out", map[string]any{"topology": fragment})
	masters, workers := members(t, h(1)+":8261")
	if !slices.Equal(masters, []string{"master1", "master2", "master3", "master4"}) ||
		!slices.Equal(workers, []string{"worker1", "worker2", "worker3", "worker4", "worker5"}) {
		t.Errorf("members after scale-out: %v %v", masters, workers)
	}
	if targets := promTargets(t, prom); !slices.Contains(targets, h(1)+":8361") || !slices.Contains(targets, h(3)+":8362") {
		t.Errorf("prometheus does not scrape the new instances: %v", targets)
	}
	var c domain.Cluster
	cp.api(t, "GET", "/api/v1/clusters/sc", nil, &c)
	if len(c.Instances) != 12 {
		t.Errorf("cluster view has %d instances after scale-out, want 12", len(c.Instances))
	}

	// Refusals.
	for _, r := range []struct {
		body   map[string]any
		status int
	}{
		{map[string]any{"nodes": []string{"10.1.1.1:8261"}}, 400},
		{map[string]any{"nodes": []string{h(1) + ":8261", h(2) + ":8261", h(3) + ":8261", h(1) + ":8361"}}, 400}, // every master
		{map[string]any{"nodes": []string{h(1) + ":8261", h(2) + ":8261"}}, 400},                                 // half of them
		{map[string]any{}, 400},
	} {
		if st := cp.api(t, "POST", "/api/v1/clusters/sc/scale-in", r.body, nil); st != r.status {
			t.Errorf("scale-in %v: %d, want %d", r.body, st, r.status)
		}
	}

	cp.runOperation(t, "POST", "/api/v1/clusters/sc/scale-in", map[string]any{"nodes": []string{h(1) + ":8261", h(2) + ":8262"}})
	masters, workers = members(t, h(2)+":8261")
	if !slices.Equal(masters, []string{"master2", "master3", "master4"}) ||
		!slices.Equal(workers, []string{"worker1", "worker3", "worker4", "worker5"}) {
		t.Errorf("members after scale-in: %v %v", masters, workers)
	}
	if targets := promTargets(t, prom); slices.Contains(targets, h(1)+":8261") || slices.Contains(targets, h(2)+":8262") {
		t.Errorf("prometheus still scrapes removed instances: %v", targets)
	}
	cp.api(t, "GET", "/api/v1/clusters/sc", nil, &c)
	if len(c.Instances) != 10 || slices.ContainsFunc(c.Instances, func(in domain.Instance) bool { return in.ID == h(1)+":8261" }) {
		t.Errorf("cluster view after scale-in: %d instances", len(c.Instances))
	}
	for _, x := range []struct {
		host int
		dir  string
	}{{1, "/srv/dm/deploy/dm-master-8261"}, {1, "/srv/dm/data/dm-master-8261"}, {2, "/srv/dm/deploy/dm-worker-8262"}} {
		if out, _ := bed.Exec(t, x.host, "test -e "+x.dir+" && echo present || echo gone"); strings.TrimSpace(out) != "gone" {
			t.Errorf("host %d: %s is %s after scale-in", x.host, x.dir, strings.TrimSpace(out))
		}
	}
	// The freed port can be used again.
	cp.runOperation(t, "POST", "/api/v1/clusters/sc/scale-out", map[string]any{"topology": fmt.Sprintf("worker_servers:\n  - host: %s\n    name: worker6\n", h(2))})
	if _, workers = members(t, h(2)+":8261"); !slices.Contains(workers, "worker6") {
		t.Errorf("workers after scaling out on the freed port: %v", workers)
	}
}
