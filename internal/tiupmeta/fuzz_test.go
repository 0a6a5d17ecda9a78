package tiupmeta

import (
	"strings"
	"testing"

	"github.com/dmgr/dmgr/domain"
)

// FuzzParse: a meta.yaml comes from the user's disk and crosses the API,
// so Parse never panics, and what it refuses it refuses as invalid input
// that names meta.yaml; what it accepts has a user, a version and a parsed
// topology.
func FuzzParse(f *testing.F) {
	f.Add(metaV3)
	f.Add("user: tidb\ndm_version: v8.1.0\ntopology:\n  master_servers:\n    - host: 10.0.0.1\n")
	f.Add("user: tidb\ndm_version: v8.1.0\n")
	f.Add("topology: [")
	f.Add("")
	f.Fuzz(func(t *testing.T, text string) {
		m, err := Parse(text)
		if err != nil {
			if domain.ErrorCode(err) != domain.Invalid {
				t.Fatalf("Parse refused with code %q, want invalid: %v", domain.ErrorCode(err), err)
			}
			if !strings.Contains(err.Error(), "meta.yaml") {
				t.Fatalf("the error does not say it is about meta.yaml: %v", err)
			}
			return
		}
		if m.User == "" || m.Version == "" || m.Parsed == nil {
			t.Fatalf("accepted without user, version or topology: %+v", m)
		}
	})
}
