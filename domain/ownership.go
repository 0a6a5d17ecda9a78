package domain

import (
	"regexp"
	"sort"
)

// Ownership: every cluster, machine and package belongs to exactly one
// group, named when it is created. Resources created before groups existed
// (their events name no group) belong to DefaultGroup, which the first
// start creates; a super admin moves a resource with OwnerMoved.

// DefaultGroup owns what was created without a group.
const DefaultGroup = "default"

// TypeOwnerMoved is the event type of OwnerMoved.
const (
	TypeOwnerMoved       = "OwnerMoved"
	TypeClusterLabelsSet = "ClusterLabelsSet"
)

// OwnerMoved (cluster, machine or package): the resource now belongs to
// group To (it belonged to From).
type OwnerMoved struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// ClusterLabelsSet (cluster): the cluster's labels are now Labels (the
// approval policy of its group matches on them).
type ClusterLabelsSet struct {
	Labels map[string]string `json:"labels"`
}

func (OwnerMoved) EventType() string       { return TypeOwnerMoved }
func (ClusterLabelsSet) EventType() string { return TypeClusterLabelsSet }

// OwnerGroup is the group that owns a resource whose events named group
// (DefaultGroup when they named none).
func OwnerGroup(group string) string {
	if group == "" {
		return DefaultGroup
	}
	return group
}

var (
	groupIDRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)
	labelKeyRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$`)
	labelValueRE = regexp.MustCompile(`^[A-Za-z0-9_.:/-]{0,128}$`)
)

// ValidateGroupName checks a group's name (and id): 1-63 lower-case
// letters, digits, '.', '_' or '-', starting with a letter or digit.
func ValidateGroupName(s string) error {
	if !groupIDRE.MatchString(s) {
		return Errorf(Invalid, "group name %q is invalid: use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", s)
	}
	return nil
}

// maxClusterLabels bounds a cluster's labels.
const maxClusterLabels = 32

// ValidateLabels checks a cluster's labels: at most 32, keys of letters,
// digits, '_', '.', '/' and '-', values without spaces.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > maxClusterLabels {
		return Errorf(Invalid, "labels: %d given, at most %d are allowed", len(labels), maxClusterLabels)
	}
	for _, k := range SortedKeys(labels) {
		if !labelKeyRE.MatchString(k) {
			return Errorf(Invalid, "label key %q is invalid: use 1-63 letters, digits, '_', '.', '/' or '-'", k)
		}
		if !labelValueRE.MatchString(labels[k]) {
			return Errorf(Invalid, "label %s: value %q is invalid: use at most 128 letters, digits, '_', '.', ':', '/' or '-'", k, labels[k])
		}
	}
	return nil
}

// SortedKeys returns the keys of m in order.
func SortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// DecideMoveOwner moves a resource that belongs to from into group to.
func DecideMoveOwner(what, from, to string) ([]Event, error) {
	if err := ValidateGroupName(to); err != nil {
		return nil, err
	}
	if OwnerGroup(from) == to {
		return nil, nil
	}
	return []Event{OwnerMoved{From: OwnerGroup(from), To: to}}, nil
}

// DecideSetClusterLabels replaces a cluster's labels.
func DecideSetClusterLabels(c *Cluster, labels map[string]string) ([]Event, error) {
	if !c.Exists() {
		return nil, Errorf(NotFound, "cluster %s does not exist", c.Name)
	}
	if err := ValidateLabels(labels); err != nil {
		return nil, err
	}
	if labels == nil {
		labels = map[string]string{}
	}
	return []Event{ClusterLabelsSet{Labels: labels}}, nil
}
