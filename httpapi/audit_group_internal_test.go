package httpapi

import (
	"slices"
	"testing"
)

// The audit's ?group= narrows what the caller may see and never widens
// it: a super admin (nil: every group) gets that group; a member gets it
// only when it is one of theirs; a stranger gets no group at all (an
// empty page, no SQL sent).
func TestAuditGroupFilterNeverWidensVisibility(t *testing.T) {
	for _, c := range []struct {
		name    string
		visible []string
		group   string
		want    []string
	}{
		{"no filter, super admin", nil, "", nil},
		{"no filter, member", []string{"g1", "g2"}, "", []string{"g1", "g2"}},
		{"super admin asks for g2", nil, "g2", []string{"g2"}},
		{"member asks for one of theirs", []string{"g1", "g2"}, "g2", []string{"g2"}},
		{"member asks for another group", []string{"g1"}, "g9", []string{}},
		{"no groups at all", []string{}, "g1", []string{}},
	} {
		got := onlyGroup(c.visible, c.group)
		if (got == nil) != (c.want == nil) || !slices.Equal(got, c.want) {
			t.Errorf("%s: onlyGroup(%v, %q) = %#v, want %#v", c.name, c.visible, c.group, got, c.want)
		}
	}
}
