package domain

import (
	"slices"
	"strings"
	"testing"
)

// TestTopologyDirectoryRules is the specification of the directories a
// topology may give an instance: one row per rule. A refusal names the
// topology line, the key and the reason; the code is Invalid (HTTP 400).
func TestTopologyDirectoryRules(t *testing.T) {
	master := func(key, dir string) string {
		return topoText("master_servers:", "  - host: 10.0.0.1", "    "+key+": "+dir)
	}
	refused := func(key, reason string) string {
		return "topology line 3: master_servers[0]." + key + ": " + reason + "; " + ownedDirAdvice
	}
	tests := []struct {
		name string
		text string
		want string // the error; "" when accepted
	}{
		// Refused: a system directory itself, or anything inside one of
		// the system trees.
		{"/", master("deploy_dir", "/"), refused("deploy_dir", "/ is the root directory")},
		{"under /bin", master("deploy_dir", "/bin/dm"), refused("deploy_dir", "/bin/dm is inside the system directory /bin")},
		{"under /boot", master("deploy_dir", "/boot/dm"), refused("deploy_dir", "/boot/dm is inside the system directory /boot")},
		{"under /dev", master("data_dir", "/dev/shm/dm"), refused("data_dir", "/dev/shm/dm is inside the system directory /dev")},
		{"/etc itself", master("deploy_dir", "/etc"), refused("deploy_dir", "/etc is a system directory")},
		{"under /etc", master("deploy_dir", "/etc/x"), refused("deploy_dir", "/etc/x is inside the system directory /etc")},
		{"under /lib", master("deploy_dir", "/lib/dm"), refused("deploy_dir", "/lib/dm is inside the system directory /lib")},
		{"under /lib64", master("log_dir", "/lib64/dm"), refused("log_dir", "/lib64/dm is inside the system directory /lib64")},
		{"under /libexec", master("deploy_dir", "/libexec/dm"), refused("deploy_dir", "/libexec/dm is inside the system directory /libexec")},
		{"under /proc", master("deploy_dir", "/proc/1"), refused("deploy_dir", "/proc/1 is inside the system directory /proc")},
		{"under /root", master("deploy_dir", "/root/x"), refused("deploy_dir", "/root/x is inside the system directory /root")},
		{"under /run", master("data_dir", "/run/dm"), refused("data_dir", "/run/dm is inside the system directory /run")},
		{"under /var/run", master("data_dir", "/var/run/dm"), refused("data_dir", "/var/run/dm is inside the system directory /var/run")},
		{"under /sbin", master("deploy_dir", "/sbin/dm"), refused("deploy_dir", "/sbin/dm is inside the system directory /sbin")},
		{"under /sys", master("deploy_dir", "/sys/dm"), refused("deploy_dir", "/sys/dm is inside the system directory /sys")},
		{"/usr itself", master("deploy_dir", "/usr"), refused("deploy_dir", "/usr is a system directory")},
		{"/usr/local", master("deploy_dir", "/usr/local"), refused("deploy_dir", "/usr/local is inside the system directory /usr")},
		{"deep under /usr", master("deploy_dir", "/usr/local/dm/m1"), refused("deploy_dir", "/usr/local/dm/m1 is inside the system directory /usr")},

		// Refused: directories that hold others' directories, exactly.
		{"/home", master("deploy_dir", "/home"), refused("deploy_dir", "/home is a system directory")},
		{"/var", master("deploy_dir", "/var"), refused("deploy_dir", "/var is a system directory")},
		{"/var/lib", master("data_dir", "/var/lib"), refused("data_dir", "/var/lib is a system directory")},
		{"/var/log", master("log_dir", "/var/log"), refused("log_dir", "/var/log is a system directory")},
		{"/opt", master("deploy_dir", "/opt"), refused("deploy_dir", "/opt is a system directory")},
		{"/srv", master("deploy_dir", "/srv"), refused("deploy_dir", "/srv is a system directory")},
		{"/tmp", master("data_dir", "/tmp"), refused("data_dir", "/tmp is a system directory")},
		{"/mnt", master("data_dir", "/mnt"), refused("data_dir", "/mnt is a system directory")},
		{"a user's home", master("deploy_dir", "/home/x"), refused("deploy_dir", "/home/x is a user's home directory")},
		{"the deploy user's home", master("data_dir", "/home/tidb"), refused("data_dir", "/home/tidb is the home directory of the deploy user tidb")},
		{"the deploy user's home, another user", topoText("global:", "  user: dm", "master_servers:", "  - host: 10.0.0.1", "    log_dir: /home/dm"),
			"topology line 5: master_servers[0].log_dir: /home/dm is the home directory of the deploy user dm; " + ownedDirAdvice},
		{"relative deploy_dir that is the home itself", master("deploy_dir", "."),
			`topology line 3: master_servers[0].deploy_dir: path "." is invalid: it must name a directory below the base directory`},

		// Refused: paths that are not clean or climb.
		{"absolute with ..", master("deploy_dir", "/srv/../etc"), `topology line 3: master_servers[0].deploy_dir: path "/srv/../etc" is invalid: it contains a ".." segment`},
		{"ending in ..", master("deploy_dir", "/srv/dm/.."), `topology line 3: master_servers[0].deploy_dir: path "/srv/dm/.." is invalid: it contains a ".." segment`},
		{"relative with ..", master("data_dir", "../../etc"), `topology line 3: master_servers[0].data_dir: path "../../etc" is invalid: it contains a ".." segment`},
		{"//", master("deploy_dir", "/srv//dm"), `topology line 3: master_servers[0].deploy_dir: path "/srv//dm" is invalid: it is not clean; write it as /srv/dm`},
		{"trailing /.", master("deploy_dir", "/srv/dm/."), `topology line 3: master_servers[0].deploy_dir: path "/srv/dm/." is invalid: it is not clean; write it as /srv/dm`},
		{"trailing /", master("deploy_dir", "/srv/dm/"), `topology line 3: master_servers[0].deploy_dir: path "/srv/dm/" is invalid: it is not clean; write it as /srv/dm`},
		{"relative with ./", master("log_dir", "./log"), `topology line 3: master_servers[0].log_dir: path "./log" is invalid: it is not clean; write it as log`},
		{"relative trailing /.", master("deploy_dir", "dm/."), `topology line 3: master_servers[0].deploy_dir: path "dm/." is invalid: it is not clean; write it as dm`},

		// Global base directories: in a system tree, or the root, at the
		// global line; one that makes a refused instance directory, at the
		// global line too.
		{"global deploy_dir /etc", topoText("global:", "  deploy_dir: /etc", "master_servers:", "  - host: 10.0.0.1"),
			"topology line 2: global.deploy_dir: /etc is a system directory: instance directories may not be made in it; choose a base directory of dmgr's own (e.g. /srv/dm, or a path relative to the deploy user's home)"},
		{"global data_dir under /usr", topoText("global:", "  data_dir: /usr/local/dm", "master_servers:", "  - host: 10.0.0.1"),
			"topology line 2: global.data_dir: /usr/local/dm is inside the system directory /usr; choose a base directory of dmgr's own (e.g. /srv/dm, or a path relative to the deploy user's home)"},
		{"global log_dir /", topoText("global:", "  log_dir: /", "master_servers:", "  - host: 10.0.0.1"),
			"topology line 2: global.log_dir: / is the root directory: instance directories may not be made directly in it; choose a base directory of dmgr's own (e.g. /srv/dm, or a path relative to the deploy user's home)"},
		{"global deploy_dir /home makes a home directory", topoText("global:", "  deploy_dir: /home", "master_servers:", "  - host: 10.0.0.1"),
			"topology line 2: global.deploy_dir, for master_servers[0].deploy_dir: /home/dm-master-8261 is a user's home directory; " + ownedDirAdvice},
		{"global deploy_dir with ..", topoText("global:", "  deploy_dir: /srv/../etc", "master_servers:", "  - host: 10.0.0.1"),
			`topology line 2: global.deploy_dir: path "/srv/../etc" is invalid: it contains a ".." segment`},

		// Accepted.
		{"under /srv", master("deploy_dir", "/srv/dm"), ""},
		{"under /opt", master("deploy_dir", "/opt/dm/m1"), ""},
		{"under /var/lib", master("data_dir", "/var/lib/dm"), ""},
		{"under /tmp", master("data_dir", "/tmp/dm"), ""},
		{"in a user's home", master("deploy_dir", "/home/x/dm"), ""},
		{"a directory of its own", master("deploy_dir", "/data1/dm-master"), ""},
		{"/usrx is not /usr", master("deploy_dir", "/usrx/dm"), ""},
		{"/library is not /lib", master("deploy_dir", "/srv/lib/dm"), ""},
		{"global bases /var and /home/tidb", topoText("global:", "  deploy_dir: /var", "  data_dir: /home/tidb", "master_servers:", "  - host: 10.0.0.1"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topo, err := ParseTopology(tt.text)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				for _, d := range topo.Instances[0].Dirs() {
					if err := ValidateOwnedDir(d, topo.Global.User); err != nil {
						t.Errorf("accepted directory %s fails ValidateOwnedDir: %v", d, err)
					}
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, dirs %v; want %q", topo.Instances[0].Dirs(), tt.want)
			}
			if ErrorCode(err) != Invalid || err.Error() != tt.want {
				t.Errorf("error %s\n %s\nwant\n %s", ErrorCode(err), err, tt.want)
			}
		})
	}
}

// TestRelativeDirectoriesAreInTheDeployUsersHome: as tiup-dm does, a
// relative deploy_dir is joined to /home/<user> (for root too).
func TestRelativeDirectoriesAreInTheDeployUsersHome(t *testing.T) {
	for _, tt := range []struct {
		text, deploy, data string
	}{
		{topoText("master_servers:", "  - host: 10.0.0.1", "    deploy_dir: dm/m1"), "/home/tidb/dm/m1", "/home/tidb/dm/m1/data"},
		{topoText("global:", "  user: dm", "  deploy_dir: dm-deploy", "master_servers:", "  - host: 10.0.0.1"), "/home/dm/dm-deploy/dm-master-8261", "/home/dm/dm-deploy/dm-master-8261/data"},
		{topoText("global:", "  user: root", "master_servers:", "  - host: 10.0.0.1", "    deploy_dir: dm"), "/home/root/dm", "/home/root/dm/data"},
	} {
		topo := mustParseTopology(t, tt.text)
		if in := topo.Instances[0]; in.DeployDir != tt.deploy || in.DataDir != tt.data {
			t.Errorf("deploy %s data %s, want %s %s", in.DeployDir, in.DataDir, tt.deploy, tt.data)
		}
	}
}

func TestValidateOwnedDir(t *testing.T) {
	checkValidator(t, "ValidateOwnedDir", func(d string) error { return ValidateOwnedDir(d, "tidb") }, []validatorCase{
		{"/srv/dm", ""},
		{"/home/tidb/deploy", ""},
		{"/var/lib/dm", ""},
		{"/", "/ is the root directory; " + ownedDirAdvice},
		{"/etc/ssh", "/etc/ssh is inside the system directory /etc; " + ownedDirAdvice},
		{"/lib32/x", "/lib32/x is inside the system directory /lib32; " + ownedDirAdvice},
		{"/var", "/var is a system directory; " + ownedDirAdvice},
		{"/home/tidb", "/home/tidb is the home directory of the deploy user tidb; " + ownedDirAdvice},
		{"/home/other", "/home/other is a user's home directory; " + ownedDirAdvice},
		{"srv/dm", `path "srv/dm" is invalid: it must be absolute (start with /)`},
		{"/srv/dm/..", `path "/srv/dm/.." is invalid: it contains a ".." segment`},
		{"/srv/dm dir", `path "/srv/dm dir" is invalid: it contains a space; use only letters, digits and . _ / + @ -`},
	})
}

// TestDeployProblem: what a deploy's host check accepts of a directory it
// is to create.
func TestDeployProblem(t *testing.T) {
	m := DirMark{Cluster: "prod-a", Operation: "op-1"}
	ours := &Marker{Cluster: "prod-a", Instance: "10.0.0.1:8261", Operation: "op-1"}
	for _, tt := range []struct {
		name string
		p    DirProbe
		want string // a part of the reason; "" when accepted
	}{
		{"absent", DirProbe{Path: "/srv/dm", Kind: DirAbsent, Real: "/srv/dm"}, ""},
		{"empty", DirProbe{Path: "/srv/dm", Kind: DirEmpty, Real: "/srv/dm"}, ""},
		{"carries this operation's marker (a retry)", DirProbe{Path: "/srv/dm", Kind: DirFull, Real: "/srv/dm", Marker: ours, MarkerOwner: "root"}, ""},
		{"absent below a link to a directory of its own", DirProbe{Path: "/srv/dm", Kind: DirAbsent, Real: "/data/dm"}, ""},
		{"not empty", DirProbe{Path: "/srv/dm", Kind: DirFull, Real: "/srv/dm"},
			"directory /srv/dm is not empty (it holds files that dmgr did not put there): dmgr deploys only into an absent or empty directory; empty it, remove it or choose another directory"},
		{"another operation's marker", DirProbe{Path: "/srv/dm", Kind: DirFull, Real: "/srv/dm", Marker: &Marker{Cluster: "prod-a", Instance: "10.0.0.1:8261", Operation: "op-0"}, MarkerOwner: "root"},
			"is not empty (it belongs to cluster prod-a (instance 10.0.0.1:8261, operation op-0))"},
		{"another cluster's marker", DirProbe{Path: "/srv/dm", Kind: DirFull, Real: "/srv/dm", Marker: &Marker{Cluster: "prod-b", Operation: "op-1"}, MarkerOwner: "root"},
			"it belongs to cluster prod-b"},
		{"a marker without a cluster", DirProbe{Path: "/srv/dm", Kind: DirFull, Real: "/srv/dm", Marker: &Marker{}, MarkerOwner: "root"}, "it holds files that dmgr did not put there"},
		{"a symbolic link", DirProbe{Path: "/srv/dm", Kind: DirSymlink, Real: "/srv/x"}, "directory /srv/dm is a symbolic link"},
		{"a file", DirProbe{Path: "/srv/dm", Kind: DirNotDir, Real: "/srv/dm"}, "/srv/dm exists and is not a directory"},
		{"resolves into /etc", DirProbe{Path: "/srv/dm/m1", Kind: DirAbsent, Real: "/etc/m1"},
			"directory /srv/dm/m1 resolves to /etc/m1: /etc/m1 is inside the system directory /etc"},
		{"resolves to a home", DirProbe{Path: "/srv/dm/m1", Kind: DirEmpty, Real: "/home/dmgr"},
			"resolves to /home/dmgr: /home/dmgr is a user's home directory"},
		{"this operation's marker, owned by the deploy user", DirProbe{Path: "/srv/dm", Kind: DirFull, Real: "/srv/dm", Marker: ours, MarkerOwner: "tidb"}, ""},
		{"this operation's marker, owned by someone else", DirProbe{Path: "/srv/dm", Kind: DirFull, Real: "/srv/dm", Marker: ours, MarkerOwner: "mallory"},
			"is not empty (it holds files that dmgr did not put there; its marker is owned by mallory, neither root nor the deploy user)"},
		{"unknown kind", DirProbe{Path: "/srv/dm", Kind: "socket", Real: "/srv/dm"}, `the host reported it as "socket"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := m.DeployProblem(tt.p, "tidb")
			if (got == "") != (tt.want == "") || !strings.Contains(got, tt.want) {
				t.Errorf("DeployProblem = %q, want %q", got, tt.want)
			}
		})
	}
	// Without the operation (a plan of another version) no marker is
	// taken for this deploy's.
	if got := (DirMark{Cluster: "prod-a"}).DeployProblem(DirProbe{Path: "/srv/dm", Kind: DirFull, Real: "/srv/dm", Marker: &Marker{Cluster: "prod-a"}, MarkerOwner: "root"}, "tidb"); got == "" {
		t.Error("a marker without operation was taken for this deploy's")
	}
}

// TestRemovalProblem: destroy and scale-in remove only what carries the
// marker of the cluster and instance.
func TestRemovalProblem(t *testing.T) {
	m := DirMark{Cluster: "prod-a", Dirs: []string{"/srv/dm/m1", "/data/m1"}}
	const inst = "10.0.0.1:8261"
	ours := &Marker{Cluster: "prod-a", Instance: inst, Operation: "op-1"}
	dir := func(path, kind string, mk *Marker) DirProbe {
		return DirProbe{Path: path, Kind: kind, Real: path, Marker: mk, MarkerOwner: "root"}
	}
	owned := func(p DirProbe, owner string) DirProbe { p.MarkerOwner = owner; return p }
	for _, tt := range []struct {
		name    string
		p, mark DirProbe
		want    string // a part of the reason; "" when removed
	}{
		{"ours", dir("/srv/dm/m1", DirFull, ours), dir("/srv/dm/m1", DirFull, ours), ""},
		{"gone already", dir("/srv/dm/m1", DirAbsent, nil), dir("/srv/dm/m1", DirAbsent, nil), ""},
		{"inside a marked directory", dir("/srv/dm/m1/bin", DirFull, nil), dir("/srv/dm/m1", DirFull, ours), ""},
		{"no marker", dir("/srv/dm/m1", DirFull, nil), dir("/srv/dm/m1", DirFull, nil), "it carries no marker of dmgr's: dmgr did not create it"},
		{"empty, no marker", dir("/srv/dm/m1", DirEmpty, nil), dir("/srv/dm/m1", DirEmpty, nil), "it carries no marker of dmgr's"},
		{"marker of another cluster", dir("/data/m1", DirFull, &Marker{Cluster: "prod-b", Instance: inst}), dir("/data/m1", DirFull, &Marker{Cluster: "prod-b", Instance: inst}),
			"it carries the marker of cluster prod-b"},
		{"marker of another instance", dir("/data/m1", DirFull, &Marker{Cluster: "prod-a", Instance: "10.0.0.1:8262"}), dir("/data/m1", DirFull, &Marker{Cluster: "prod-a", Instance: "10.0.0.1:8262"}),
			"it carries the marker of instance 10.0.0.1:8262 of cluster prod-a"},
		{"marker without a cluster", dir("/data/m1", DirFull, &Marker{Instance: inst}), dir("/data/m1", DirFull, &Marker{Instance: inst}), "carries no marker"},
		{"holder without a marker", dir("/srv/dm/m1/bin", DirFull, nil), dir("/srv/dm/m1", DirFull, nil),
			"the directory /srv/dm/m1 that holds it carries no marker of dmgr's"},
		{"holder is a link", dir("/srv/dm/m1/bin", DirFull, nil), dir("/srv/dm/m1", DirSymlink, nil), "the directory /srv/dm/m1 that holds it is a symbolic link"},
		{"a symbolic link", dir("/srv/dm/m1", DirSymlink, nil), dir("/srv/dm/m1", DirSymlink, nil), "it is a symbolic link"},
		{"ours, owned by the deploy user", owned(dir("/srv/dm/m1", DirFull, ours), "tidb"), owned(dir("/srv/dm/m1", DirFull, ours), "tidb"), ""},
		{"ours, owned by someone else", owned(dir("/srv/dm/m1", DirFull, ours), "nobody"), owned(dir("/srv/dm/m1", DirFull, ours), "nobody"),
			"its marker is owned by nobody, neither root nor the deploy user"},
		{"holder's marker owned by someone else", dir("/srv/dm/m1/bin", DirFull, nil), owned(dir("/srv/dm/m1", DirFull, ours), "nobody"),
			"the directory /srv/dm/m1 that holds it: its marker is owned by nobody"},
		{"a file", dir("/srv/dm/m1", DirNotDir, nil), dir("/srv/dm/m1", DirNotDir, nil), "it is not a directory"},
		{"resolves into /etc", DirProbe{Path: "/srv/dm/m1", Kind: DirFull, Real: "/etc/ssh", Marker: ours, MarkerOwner: "root"}, dir("/srv/dm/m1", DirFull, ours),
			"it resolves to /etc/ssh: /etc/ssh is inside the system directory /etc"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := m.RemovalProblem(tt.p, tt.mark, inst, "tidb")
			if (got == "") != (tt.want == "") || !strings.Contains(got, tt.want) {
				t.Errorf("RemovalProblem = %q, want %q", got, tt.want)
			}
		})
	}
	for dir, want := range map[string]string{
		"/srv/dm/m1": "/srv/dm/m1", "/srv/dm/m1/bin": "/srv/dm/m1", "/data/m1": "/data/m1", "/data/m1/log": "/data/m1", "/elsewhere": "/elsewhere",
	} {
		if got := m.MarkDirFor(dir); got != want {
			t.Errorf("MarkDirFor(%s) = %s, want %s", dir, got, want)
		}
	}
}

func TestParseMarker(t *testing.T) {
	m := DirMark{Cluster: "prod-a", Operation: "op-1"}
	if got := ParseMarker(m.MarkerContent("[fd00::1]:8261")); got != (Marker{Cluster: "prod-a", Instance: "[fd00::1]:8261", Operation: "op-1"}) {
		t.Errorf("round trip: %+v", got)
	}
	if got := ParseMarker("cluster=a\ncluster=b\n# instance=x\nnoise"); got != (Marker{Cluster: "a"}) {
		t.Errorf("first line of each, others ignored: %+v", got)
	}
}

// TestDeployPlanMarksItsDirectories: the host check knows every directory
// the deploy creates on its host and the operation; each instance's
// directories step writes its marker into the instance's top directories.
func TestDeployPlanMarksItsDirectories(t *testing.T) {
	topo := topoText("global:", "  deploy_dir: /srv/dm", "master_servers:", "  - host: 198.18.0.11", "    data_dir: /data/m1",
		"worker_servers:", "  - host: 198.18.0.11")
	evs := deployedCluster(t, "prod-a", topo)
	plan := evs[1].event.(OperationRequested).Plan
	check := stepByID(t, plan, "check/198.18.0.11")
	if check.Mark == nil || check.Mark.Cluster != "prod-a" || check.Mark.Operation != "op-deploy-prod-a" ||
		!slices.Equal(check.Mark.Dirs, []string{"/srv/dm/dm-master-8261", "/data/m1", "/srv/dm/dm-worker-8262"}) {
		t.Errorf("check mark %+v", check.Mark)
	}
	dirs := stepByID(t, plan, "dirs/198.18.0.11:8261")
	if dirs.Mark == nil || dirs.Mark.Operation != "op-deploy-prod-a" || !slices.Equal(dirs.Mark.Dirs, []string{"/srv/dm/dm-master-8261", "/data/m1"}) {
		t.Errorf("dirs mark %+v", dirs.Mark)
	}
	for _, s := range plan {
		if s.Mark != nil && s.Kind != StepCheckHost && s.Kind != StepMakeDirs {
			t.Errorf("step %s (%s) has a mark", s.ID, s.Kind)
		}
	}
}

func TestDestroyRemovalsCarryTheMark(t *testing.T) {
	c := deployedProdA(t)
	plan := plans(t)(DecideDestroyCluster(&c, DestroyCluster{Name: "prod-a", OperationID: "op-d"}))
	rm := stepByID(t, plan, "remove/198.18.0.11:8261")
	if rm.Mark == nil || rm.Mark.Cluster != "prod-a" || !slices.Equal(rm.Mark.Dirs, []string{"/dm/deploy/dm-master-8261", "/dm/data/dm-master-8261"}) {
		t.Errorf("remove mark %+v", rm.Mark)
	}
	if rm.BestEffort || rm.TimeoutSec != 0 {
		t.Errorf("a plain destroy's removal is best effort or has a deadline: %+v", rm)
	}
	// Scale-in's removal too.
	w := runningProdA(t)
	evs, err := DecideScaleIn(w.Clusters["prod-a"], ScaleIn{Name: "prod-a", Nodes: []string{"198.18.0.12:8262"}, OperationID: "op-si"})
	if err != nil {
		t.Fatal(err)
	}
	rm = stepByID(t, evs[1].(OperationRequested).Plan, "remove/198.18.0.12:8262")
	if rm.Mark == nil || rm.Mark.Cluster != "prod-a" || !slices.Equal(rm.Mark.Dirs, []string{"/dm/deploy/dm-worker-8262", "/dm/data/dm-worker-8262"}) {
		t.Errorf("scale-in remove mark %+v", rm.Mark)
	}
}

// TestForceDestroy: needs the name repeated; tries each instance once, as
// best-effort steps with a deadline; the cluster is destroyed even when
// every try failed.
func TestForceDestroy(t *testing.T) {
	c := deployedProdA(t)
	for _, tt := range []struct {
		name string
		cmd  DestroyCluster
		code string
		msg  string
	}{
		{"force without the name", DestroyCluster{Name: "prod-a", Force: true, OperationID: "op"}, Invalid,
			`a forced destroy forgets cluster prod-a even when its hosts cannot be reached: confirm it by repeating the cluster's name in the body, {"name": "prod-a"}`},
		{"force with another name", DestroyCluster{Name: "prod-a", Force: true, Confirm: "prod-b", OperationID: "op"}, Invalid,
			`the name "prod-b" in the body is not the cluster's name prod-a`},
		{"case differs", DestroyCluster{Name: "prod-a", Force: true, Confirm: "PROD-A", OperationID: "op"}, Invalid, `the name "PROD-A" in the body`},
		{"plain destroy with another name", DestroyCluster{Name: "prod-a", Confirm: "x", OperationID: "op"}, Invalid, `the name "x" in the body`},
		{"unknown cluster", DestroyCluster{Name: "nope", Force: true, Confirm: "nope", OperationID: "op"}, NotFound, "cluster nope does not exist"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := DecideDestroyCluster(map[bool]*Cluster{true: &c, false: nil}[tt.cmd.Name == "prod-a"], tt.cmd)
			if ErrorCode(err) != tt.code || !strings.Contains(ErrorMessage(err), tt.msg) || evs != nil {
				t.Errorf("= %v, %v; want %s %q", evs, err, tt.code, tt.msg)
			}
		})
	}
	busy := deployingProdA(t)
	if _, err := DecideDestroyCluster(&busy, DestroyCluster{Name: "prod-a", Force: true, Confirm: "prod-a", OperationID: "op"}); ErrorCode(err) != Conflict {
		t.Errorf("force while an operation runs: %v", err)
	}

	evs, err := DecideDestroyCluster(&c, DestroyCluster{Name: "prod-a", Force: true, Confirm: "prod-a", OperationID: "op-f"})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := evs[0].(ClusterDestroyRequested); !ok || !got.Force {
		t.Fatalf("first event %#v, want ClusterDestroyRequested with force", evs[0])
	}
	plan := evs[1].(OperationRequested).Plan
	if len(plan) != len(c.Instances) {
		t.Errorf("%d steps for %d instances: %v", len(plan), len(c.Instances), stepIDs(plan))
	}
	for _, s := range plan {
		if s.Kind != StepForceRemove || !s.BestEffort || s.TimeoutSec <= 0 || s.TimeoutSec > 60 || len(s.Needs) != 0 ||
			s.Service == nil || s.Mark == nil || s.Mark.Cluster != "prod-a" || len(s.Dirs) == 0 {
			t.Errorf("step %+v: want a best-effort force_remove with a short deadline, needing nothing", s)
		}
	}
	for _, e := range evs {
		c = EvolveCluster(c, e)
	}
	// Every host is gone: every try fails, and the cluster is destroyed.
	var last []Event
	for _, s := range plan {
		c, last = reportAs(t, c, StepReport{Operation: "op-f", Step: s.ID, Attempt: 1, Agent: "a", Finished: true,
			Error: "step " + s.ID + " on " + s.Host + ": connect: connection refused", ExitCode: -1}, 0)
	}
	if _, ok := last[len(last)-1].(OperationSucceeded); !ok {
		t.Fatalf("after every try failed: %v, want OperationSucceeded", last)
	}
	if c.Exists() || c.Status != ClusterStatusDestroyed {
		t.Errorf("cluster %s after a forced destroy", c.Status)
	}
	if op := c.FindOperation("op-f"); op.Steps[plan[0].ID].Status != StepStatusFailed {
		t.Errorf("the failed try is recorded as %q", op.Steps[plan[0].ID].Status)
	}
}

// TestBestEffortStepsDoNotFailTheOperation: a failed best-effort step
// settles; what needs it runs; a failed plain step still fails.
func TestBestEffortStepsDoNotFailTheOperation(t *testing.T) {
	plan := []Step{{ID: "a", BestEffort: true}, {ID: "b", Needs: []string{"a"}}, {ID: "c"}}
	p := ProgressOf(plan, map[string]StepState{"a": {Status: StepStatusFailed}})
	if len(p.Ready) != 2 || p.Ready[0].ID != "b" || len(p.Failed) != 0 || len(p.Blocked) != 0 || p.Succeeded != 1 {
		t.Errorf("after a failed best-effort step: %+v", p)
	}
	p = ProgressOf(plan, map[string]StepState{"a": {Status: StepStatusFailed}, "b": {Status: StepStatusSucceeded}, "c": {Status: StepStatusFailed}})
	if !p.Done || !slices.Equal(p.Failed, []string{"c"}) || p.Succeeded != 2 {
		t.Errorf("a failed plain step: %+v", p)
	}
}

func TestDestroyRecordsItsRequest(t *testing.T) {
	c := deployedProdA(t)
	evs, err := DecideDestroyCluster(&c, DestroyCluster{Name: "prod-a", RetainData: true, Confirm: "prod-a", OperationID: "op-d"})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := evs[0].(ClusterDestroyRequested); !ok || got.Force || !got.RetainData {
		t.Errorf("first event %#v", evs[0])
	}
}
