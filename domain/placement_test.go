package domain

import "testing"

func TestCheckPlacement(t *testing.T) {
	master := func(host string, line int) Instance {
		return Instance{ID: host + ":8261", Name: "dm-" + host + "-8261", Role: RoleMaster, Host: host, SSHPort: 22, Port: 8261, PeerPort: 8291,
			DeployDir: "/dm/deploy/dm-master-8261", DataDir: "/dm/data/dm-master-8261", LogDir: "/dm/deploy/dm-master-8261/log", Line: line}
	}
	worker := func(host string, port int, deploy string, line int) Instance {
		return Instance{ID: host + ":" + itoa(port), Name: "dm-" + host + "-" + itoa(port), Role: RoleWorker, Host: host, SSHPort: 22, Port: port,
			DeployDir: deploy, DataDir: deploy + "/data", LogDir: deploy + "/log", Line: line}
	}
	prodA := []Allocation{
		{Cluster: "prod-a", Instance: master("198.18.0.11", 5)},
		{Cluster: "prod-a", Instance: worker("198.18.0.12", 8262, "/dm/deploy/dm-worker-8262", 9)},
	}
	tests := []struct {
		name     string
		new      []Instance
		existing []Allocation
		want     string // "" for no clash
	}{
		{"nothing placed yet", []Instance{master("198.18.0.11", 12)}, nil, ""},
		{"same port and dirs on a different host", []Instance{master("198.18.0.13", 12)}, prodA, ""},
		{"different port and dirs on the same host",
			[]Instance{worker("198.18.0.11", 8263, "/dm/deploy/dm-worker-8263", 12)}, prodA, ""},
		{"sibling directories do not clash",
			[]Instance{worker("198.18.0.12", 8263, "/dm/deploy/dm-worker-82620", 12)}, prodA, ""},
		{"port clash", []Instance{master("198.18.0.11", 12)}, prodA,
			"topology line 12: port 8261 on 198.18.0.11 is already used by cluster prod-a (dm-master 198.18.0.11:8261)"},
		{"new port on an existing peer port", []Instance{worker("198.18.0.11", 8291, "/dm/w", 12)}, prodA,
			"topology line 12: port 8291 on 198.18.0.11 is already used by cluster prod-a (dm-master 198.18.0.11:8261)"},
		{"new peer port on an existing port",
			[]Instance{{ID: "198.18.0.12:8250", Role: RoleMaster, Host: "198.18.0.12", Port: 8250, PeerPort: 8262, DeployDir: "/m", Line: 3}}, prodA,
			"topology line 3: port 8262 on 198.18.0.12 is already used by cluster prod-a (dm-worker 198.18.0.12:8262)"},
		{"same directory", []Instance{worker("198.18.0.11", 8262, "/dm/deploy/dm-master-8261", 14)}, prodA,
			"topology line 14: directory /dm/deploy/dm-master-8261 on 198.18.0.11 clashes with cluster prod-a (dm-master 198.18.0.11:8261)"},
		{"directory inside an existing one", []Instance{worker("198.18.0.11", 8262, "/dm/data/dm-master-8261/w", 14)}, prodA,
			"topology line 14: directory /dm/data/dm-master-8261/w on 198.18.0.11 clashes with cluster prod-a (dm-master 198.18.0.11:8261)"},
		{"directory containing an existing one", []Instance{worker("198.18.0.11", 8262, "/dm", 14)}, prodA,
			"topology line 14: directory /dm on 198.18.0.11 clashes with cluster prod-a (dm-master 198.18.0.11:8261)"},
		{"the first clash in instance order is reported",
			[]Instance{master("198.18.0.13", 10), worker("198.18.0.12", 8262, "/other", 11), master("198.18.0.11", 12)}, prodA,
			"topology line 11: port 8262 on 198.18.0.12 is already used by cluster prod-a (dm-worker 198.18.0.12:8262)"},
		{"ports before directories",
			[]Instance{worker("198.18.0.11", 8261, "/dm/data/dm-master-8261", 12)},
			[]Allocation{{Cluster: "prod-b", Instance: worker("198.18.0.11", 9999, "/dm/data/dm-master-8261", 1)}, prodA[0]},
			"topology line 12: port 8261 on 198.18.0.11 is already used by cluster prod-a (dm-master 198.18.0.11:8261)"},
		{"hosts are compared as addresses", []Instance{master("fd00:0::1", 7)},
			[]Allocation{{Cluster: "v6", Instance: Instance{ID: "[fd00::1]:8261", Role: RoleMaster, Host: "fd00::1", Port: 8261, DeployDir: "/a"}}},
			"topology line 7: port 8261 on fd00:0::1 is already used by cluster v6 (dm-master [fd00::1]:8261)"},
		{"host names are compared without case", []Instance{master("DM1.example.com", 7)},
			[]Allocation{{Cluster: "n", Instance: Instance{ID: "dm1.example.com:9000", Role: RoleWorker, Host: "dm1.example.com", Port: 9000, DeployDir: "/dm/deploy"}}},
			"topology line 7: directory /dm/deploy/dm-master-8261 on DM1.example.com clashes with cluster n (dm-worker dm1.example.com:9000)"},
		{"an instance without a line is named",
			[]Instance{{ID: "198.18.0.11:8261", Role: RoleMaster, Host: "198.18.0.11", Port: 8261, DeployDir: "/x"}}, prodA,
			"dm-master 198.18.0.11:8261: port 8261 on 198.18.0.11 is already used by cluster prod-a (dm-master 198.18.0.11:8261)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPlacement(tt.new, tt.existing)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("CheckPlacement = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckPlacement = nil, want %q", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n %s\nwant\n %s", err, tt.want)
			}
			if ErrorCode(err) != Conflict {
				t.Errorf("code = %s, want %s", ErrorCode(err), Conflict)
			}
		})
	}
}

// TestCheckPlacementOfParsedTopologies places a parsed topology next to
// another cluster's, as DeployCluster does.
func TestCheckPlacementOfParsedTopologies(t *testing.T) {
	prodA := mustParseTopology(t, topoText("global:", "  deploy_dir: /dm/deploy", "master_servers:", "  - host: 198.18.0.11"))
	var existing []Allocation
	for _, in := range prodA.Instances {
		existing = append(existing, Allocation{Cluster: "prod-a", Instance: in})
	}
	clash := mustParseTopology(t, topoText("global:", "  deploy_dir: /dm/deploy", "master_servers:", "  - host: 198.18.0.12",
		"worker_servers:", "  - host: 198.18.0.11", "    port: 8261"))
	err := CheckPlacement(clash.Instances, existing)
	want := "topology line 6: port 8261 on 198.18.0.11 is already used by cluster prod-a (dm-master 198.18.0.11:8261)"
	if err == nil || err.Error() != want {
		t.Errorf("CheckPlacement = %v, want %q", err, want)
	}
	ok := mustParseTopology(t, topoText("global:", "  deploy_dir: /dm/b", "master_servers:", "  - host: 198.18.0.11", "    port: 9261", "    peer_port: 9291"))
	if err := CheckPlacement(ok.Instances, existing); err != nil {
		t.Errorf("CheckPlacement = %v, want nil", err)
	}
}
