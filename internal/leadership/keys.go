// Package leadership owns dmgr's etcd keys and its one way of electing a
// leader.
//
// # Key layout
//
// Every key dmgr writes lives under Root, one folder per role, each name
// one path segment of its own:
//
//	/dmgr/v1/leader/cluster/<cluster>/<lease>   a cluster's election (coordinators)
//	/dmgr/v1/leader/projector/<lease>           the projector's election (servers)
//	/dmgr/v1/coordinators/<coordinator>         a live coordinator, under its lease
//	/dmgr/v1/active-clusters/<cluster>          a cluster that may have a running operation
//	/dmgr/v1/agents/online/<agent>              a live agent, under its lease
//	/dmgr/v1/agents/seen/<agent>                an agent that ever registered
//	/dmgr/v1/ready-probe                        read (never written) by /readyz
//
// A name is written as one segment (Segment): "/" and "%" in it are
// escaped, and the empty name is "%", so no name can reach into another
// name's keys or another role's folder, and of two distinct keys of this
// layout none is a prefix of the other unless it is a folder holding it.
// Cluster names (domain: letters, digits, ".", "_", "-") are written as
// they are, so that `etcdctl get --prefix /dmgr/v1/leader/cluster/prod/`
// finds prod's election.
//
// Before v1 the projector's election was /dmgr/leader/projections and a
// cluster's /dmgr/leader/<cluster>, so a cluster named "projections"
// shared the projector's election and was never led.
//
// # Elections
//
// Session and Term are the election of both the cluster leaders and the
// projector: a lease kept alive, trusted only while its last keepalive
// answer is recent enough that etcd cannot have expired it (the safety
// window, two thirds of the TTL), and a term whose fencing token is the
// create revision of its election key, the first created under the
// election's prefix. The key is created anew for every term, never
// carried over from an earlier term of the same session (whose key has
// the same name, <election>/<lease>), so that tokens only grow and a late
// resignation never deletes a later term's key; and a term ends as soon
// as its key is gone, whoever deleted it.
package leadership

import (
	"net/url"
	"strings"
)

// Root is the folder of every key of this layout.
const Root = "/dmgr/v1/"

// Folders of the layout. Each ends with "/".
const (
	// LeaderPrefix holds every election.
	LeaderPrefix = Root + "leader/"
	// ClusterLeaderPrefix holds the clusters' elections.
	ClusterLeaderPrefix = LeaderPrefix + "cluster/"
	// CoordinatorsPrefix holds the live coordinators' keys.
	CoordinatorsPrefix = Root + "coordinators/"
	// ActiveClustersPrefix holds a key per cluster that may have a
	// running operation: the coordinators campaign only for these.
	ActiveClustersPrefix = Root + "active-clusters/"
	// AgentsPrefix holds the agents' keys.
	AgentsPrefix = Root + "agents/"
	// AgentsOnlinePrefix holds the live agents' keys, each under its
	// agent's lease.
	AgentsOnlinePrefix = AgentsPrefix + "online/"
	// AgentsSeenPrefix holds a key per agent that ever registered.
	AgentsSeenPrefix = AgentsPrefix + "seen/"
)

// ProjectorElection is the election under which one projector runs at a
// time; its keys are under ProjectorElection + "/".
const ProjectorElection = LeaderPrefix + "projector"

// ReadyProbeKey is the key /readyz reads to see that etcd answers. It is
// never written.
const ReadyProbeKey = Root + "ready-probe"

// Segment writes name as one path segment: "%" and "/" (and every other
// byte that is not safe in a URL path segment) percent-escaped, the empty
// name as "%", which no escaped name is. Segment is one-to-one.
func Segment(name string) string {
	if name == "" {
		return "%"
	}
	return url.PathEscape(name)
}

// unsegment reverses Segment; ok is false when s is not one.
func unsegment(s string) (string, bool) {
	if s == "%" {
		return "", true
	}
	name, err := url.PathUnescape(s)
	if err != nil || Segment(name) != s {
		return "", false
	}
	return name, true
}

// ClusterElection is the election of a cluster's leader; its keys are
// under ClusterElection(name) + "/".
func ClusterElection(cluster string) string { return ClusterLeaderPrefix + Segment(cluster) }

// ClusterLeaderKeys is the prefix of a cluster's election keys: the key
// created first under it is the leader's, and its create revision is the
// leader's fencing token, carried by every commit and step it makes.
func ClusterLeaderKeys(cluster string) string { return ClusterElection(cluster) + "/" }

// ProjectorLeaderKeys is the prefix of the projector's election keys.
const ProjectorLeaderKeys = ProjectorElection + "/"

// CoordinatorKey is the key of a live coordinator.
func CoordinatorKey(id string) string { return CoordinatorsPrefix + Segment(id) }

// CoordinatorID is the id of the coordinator whose key is key.
func CoordinatorID(key string) (string, bool) { return nameUnder(CoordinatorsPrefix, key) }

// ActiveClusterKey marks a cluster that may have a running operation:
// it is written when a command is committed to the cluster and deleted
// by the cluster's leader once it has seen no operation running. The
// coordinators campaign for the clusters with a key here, and for no
// other, so that a start costs what the running operations cost, not
// what the history holds.
func ActiveClusterKey(cluster string) string { return ActiveClustersPrefix + Segment(cluster) }

// ActiveCluster is the cluster whose active key is key.
func ActiveCluster(key string) (string, bool) { return nameUnder(ActiveClustersPrefix, key) }

// AgentOnlineKey is the key of a live agent.
func AgentOnlineKey(id string) string { return AgentsOnlinePrefix + Segment(id) }

// AgentSeenKey is the key of an agent that registered.
func AgentSeenKey(id string) string { return AgentsSeenPrefix + Segment(id) }

// AgentID is the id of the agent whose online or seen key is key.
func AgentID(key string) (string, bool) {
	if id, ok := nameUnder(AgentsOnlinePrefix, key); ok {
		return id, true
	}
	return nameUnder(AgentsSeenPrefix, key)
}

func nameUnder(prefix, key string) (string, bool) {
	s, ok := strings.CutPrefix(key, prefix)
	if !ok || strings.Contains(s, "/") {
		return "", false
	}
	return unsegment(s)
}
