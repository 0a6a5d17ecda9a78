package pkgstore

import (
	"testing"

	"github.com/dmgr/dmgr/domain"
)

func TestParseName(t *testing.T) {
	good := []struct{ in, name, version string }{
		{"dm-v2.0.1.tar.gz", "dm", "v2.0.1"},
		{"dm-v8.1.0-linux-amd64.tar.gz", "dm", "v8.1.0"},
		{"dm-v8.1.0-alpha.tar.gz", "dm", "v8.1.0-alpha"},
		{"dm-v8.1.0-alpha-darwin-arm64.tar.gz", "dm", "v8.1.0-alpha"},
		{"dm-v5.0.0-rc.1.tgz", "dm", "v5.0.0-rc.1"},
		{"dm-patch-v6.5.10.tar.gz", "dm-patch", "v6.5.10"},
		{"dm2-v0.0.0.tar.gz", "dm2", "v0.0.0"},
	}
	for _, tc := range good {
		name, version, err := ParseName(tc.in)
		if err != nil || name != tc.name || version != tc.version {
			t.Errorf("ParseName(%q) = %q, %q, %v; want %q, %q", tc.in, name, version, err, tc.name, tc.version)
		}
	}

	bad := []struct{ in, msg string }{
		{"", "package file name is empty"},
		{"uploads/dm-v2.0.1.tar.gz", "is a path"},
		{"dm-v2.0.1.zip", "must end in .tar.gz"},
		{"dm-v2.0.1.tar", "must end in .tar.gz"},
		{"dm.tar.gz", "has no version"},
		{"dm-2.0.1.tar.gz", "has no version"},
		{"dm-v2.0.tar.gz", "has no version"},
		{"dm-v02.0.1.tar.gz", "has no version"},
		{"dm-v2.0.1-.tar.gz", "has no version"},
		{"dm-v2.0.1-a..b.tar.gz", "has no version"},
		{"-v2.0.1.tar.gz", `name ""`},
		{"DM-v2.0.1.tar.gz", `name "DM"`},
		{"2dm-v2.0.1.tar.gz", `name "2dm"`},
		{"dm_x-v2.0.1.tar.gz", `name "dm_x"`},
		{"dm--v2.0.1.tar.gz", `name "dm-"`},
	}
	for _, tc := range bad {
		_, _, err := ParseName(tc.in)
		t.Run(tc.in, func(t *testing.T) { requireCode(t, err, domain.Invalid, tc.msg) })
	}
}
