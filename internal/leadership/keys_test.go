package leadership

import (
	"strings"
	"testing"
)

// names are cluster, coordinator and agent names that could reach into
// another's keys: the layout's own folder names, the old projector
// election's name, names that are prefixes of one another, and names that
// are not valid cluster names but could be ids (escapes, slashes, empty).
var names = []string{
	"projections", "projector", "leader", "cluster", "v1", "agents", "online", "seen",
	"coordinators", "ready-probe", "dmgr", "active-clusters", "active",
	"a", "ab", "a.b", "a-", "prod", "prod-1", "prod-10", "prod_1", ".", "..", "a..",
	"", "%", "%25", "%2F", "a/b", "a%2Fb", "/", "x/", "/x", "a b", "é", "\x00",
}

// entity is one holder of keys: the space its keys are in, and the
// role's folder. A space ending with "/" is read by prefix (an election:
// every key under it is the holder's); any other is one key, read and
// written by its exact name only.
type entity struct {
	role, name, space, folder string
}

func (e entity) byPrefix() bool { return strings.HasSuffix(e.space, "/") }

func entities() []entity {
	var out []entity
	for _, n := range names {
		out = append(out,
			entity{"cluster election", n, ClusterLeaderKeys(n), ClusterLeaderPrefix},
			entity{"coordinator", n, CoordinatorKey(n), CoordinatorsPrefix},
			entity{"active cluster", n, ActiveClusterKey(n), ActiveClustersPrefix},
			entity{"online agent", n, AgentOnlineKey(n), AgentsOnlinePrefix},
			entity{"seen agent", n, AgentSeenKey(n), AgentsSeenPrefix},
		)
	}
	return append(out,
		entity{"projector election", "", ProjectorLeaderKeys, ProjectorLeaderKeys},
		entity{"ready probe", "", ReadyProbeKey, ReadyProbeKey},
	)
}

// No two holders' key spaces overlap: a prefix read of one (an agent's
// check of a cluster's leader, a campaign's wait for the keys created
// before its own) never sees another's keys, and no two holders share a
// key. This is what made a cluster named "projections" share the
// projector's election before v1. (One key may be a string prefix of
// another, coordinators/a of coordinators/ab: keys that are not
// elections are never read by prefix, except by their role's folder.)
func TestNoKeySpaceIsAPrefixOfAnother(t *testing.T) {
	es := entities()
	for i, a := range es {
		if !strings.HasPrefix(a.space, Root) {
			t.Errorf("%s %q: %s is outside %s", a.role, a.name, a.space, Root)
		}
		if !strings.HasPrefix(a.space, a.folder) {
			t.Errorf("%s %q: %s is outside its folder %s", a.role, a.name, a.space, a.folder)
		}
		for j, b := range es {
			if i == j {
				continue
			}
			if a.space == b.space || a.byPrefix() && strings.HasPrefix(b.space, a.space) {
				t.Errorf("%s %q (%s) holds the keys of %s %q (%s)", a.role, a.name, a.space, b.role, b.name, b.space)
			}
			if a.role != b.role && a.folder != b.folder && strings.HasPrefix(b.space, a.folder) {
				t.Errorf("folder %s of %s holds %s %q (%s)", a.folder, a.role, b.role, b.name, b.space)
			}
		}
	}
}

// The folders of different roles are apart too, so that a role's
// permission on its folder (embedded.EtcdRoles) gives it nothing of
// another role's.
func TestRoleFoldersAreApart(t *testing.T) {
	folders := map[string]string{
		"cluster elections": ClusterLeaderPrefix, "projector election": ProjectorLeaderKeys,
		"coordinators": CoordinatorsPrefix, "agents": AgentsPrefix, "ready probe": ReadyProbeKey,
		"active clusters": ActiveClustersPrefix,
	}
	for ra, a := range folders {
		for rb, b := range folders {
			if ra != rb && strings.HasPrefix(b, a) {
				t.Errorf("%s (%s) holds %s (%s)", ra, a, rb, b)
			}
		}
	}
}

// The layout, spelled out: operators type these keys into etcdctl, and
// the roles' permissions are granted on them.
func TestKeyLayout(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{ClusterElection("prod"), "/dmgr/v1/leader/cluster/prod"},
		{ClusterLeaderKeys("projections"), "/dmgr/v1/leader/cluster/projections/"},
		{ProjectorElection, "/dmgr/v1/leader/projector"},
		{ProjectorLeaderKeys, "/dmgr/v1/leader/projector/"},
		{CoordinatorKey("server-1"), "/dmgr/v1/coordinators/server-1"},
		{ActiveClusterKey("prod"), "/dmgr/v1/active-clusters/prod"},
		{AgentOnlineKey("agent-1"), "/dmgr/v1/agents/online/agent-1"},
		{AgentSeenKey("agent-1"), "/dmgr/v1/agents/seen/agent-1"},
		{ReadyProbeKey, "/dmgr/v1/ready-probe"},
		{ClusterElection("a/b"), "/dmgr/v1/leader/cluster/a%2Fb"},
		{CoordinatorKey(""), "/dmgr/v1/coordinators/%"},
	} {
		if c.got != c.want {
			t.Errorf("got %s, want %s", c.got, c.want)
		}
	}
}

// Segment is one-to-one, and the ids read back from keys are the ids
// written.
func TestSegmentRoundTrips(t *testing.T) {
	seen := map[string]string{}
	for _, n := range names {
		s := Segment(n)
		if strings.Contains(s, "/") {
			t.Errorf("Segment(%q) = %q holds a slash", n, s)
		}
		if other, ok := seen[s]; ok {
			t.Errorf("Segment(%q) = Segment(%q) = %q", n, other, s)
		}
		seen[s] = n
		if id, ok := CoordinatorID(CoordinatorKey(n)); !ok || id != n {
			t.Errorf("CoordinatorID(CoordinatorKey(%q)) = %q, %v", n, id, ok)
		}
		if c, ok := ActiveCluster(ActiveClusterKey(n)); !ok || c != n {
			t.Errorf("ActiveCluster(ActiveClusterKey(%q)) = %q, %v", n, c, ok)
		}
		for _, k := range []string{AgentOnlineKey(n), AgentSeenKey(n)} {
			if id, ok := AgentID(k); !ok || id != n {
				t.Errorf("AgentID(%s) = %q, %v, want %q", k, id, ok, n)
			}
		}
	}
	for _, k := range []string{CoordinatorsPrefix + "a/b", CoordinatorsPrefix + "%zz", CoordinatorsPrefix + "a b", AgentsPrefix + "x", "/dmgr/coordinators/a"} {
		if id, ok := CoordinatorID(k); ok {
			t.Errorf("CoordinatorID(%q) = %q, want no id", k, id)
		}
		if id, ok := AgentID(k); ok {
			t.Errorf("AgentID(%q) = %q, want no id", k, id)
		}
	}
}

func FuzzSegment(f *testing.F) {
	for _, n := range names {
		f.Add(n, "projections")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		sa, sb := Segment(a), Segment(b)
		if strings.Contains(sa, "/") {
			t.Fatalf("Segment(%q) = %q holds a slash", a, sa)
		}
		if a != b && sa == sb {
			t.Fatalf("Segment(%q) = Segment(%q) = %q", a, b, sa)
		}
		if a != b && strings.HasPrefix(ClusterLeaderKeys(b), ClusterLeaderKeys(a)) {
			t.Fatalf("cluster %q's election holds cluster %q's", a, b)
		}
		if id, ok := CoordinatorID(CoordinatorKey(a)); !ok || id != a {
			t.Fatalf("CoordinatorID(CoordinatorKey(%q)) = %q, %v", a, id, ok)
		}
	})
}
