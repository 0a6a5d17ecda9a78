package domain

import (
	"reflect"
	"strings"
	"testing"
)

// packageState folds the history of one package; nil when it has none.
func packageState(evs []Event) *Package {
	if len(evs) == 0 {
		return nil
	}
	var p Package
	for _, e := range evs {
		p = EvolvePackage(p, e)
	}
	return &p
}

func TestDecideUploadPackage(t *testing.T) {
	sha := strings.Repeat("0123456789abcdef", 4)
	files := []PackageFile{{Path: "dm-master-v8.1.0-linux-amd64.tar.gz", Size: 1000, Mode: 0o644, SHA256: sha}}
	cmd := func(edit func(*UploadPackage)) UploadPackage {
		c := UploadPackage{Name: "dm", Version: "v8.1.0", OS: "linux", Arch: "amd64", SHA256: sha, Size: 123456789,
			Object: "packages/dm-v8.1.0-linux-amd64.tar.gz", Components: []string{"dm-master", "dm-worker"}, Files: files}
		if edit != nil {
			edit(&c)
		}
		return c
	}
	uploaded := func(id, version, arch string) PackageUploaded {
		return PackageUploaded{ID: id, Name: "dm", Version: version, OS: "linux", Arch: arch, SHA256: sha, Size: 123456789,
			Object: "packages/dm-v8.1.0-linux-amd64.tar.gz", Components: []string{"dm-master", "dm-worker"}, Files: files}
	}
	tests := []struct {
		name  string
		given []Event
		when  UploadPackage
		then  then
	}{
		{"uploaded", nil, cmd(nil),
			thenEvents(uploaded("dm-v8.1.0-linux-amd64", "v8.1.0", "amd64"))},
		{"arm64", nil, cmd(func(c *UploadPackage) { c.Arch = "arm64" }),
			thenEvents(uploaded("dm-v8.1.0-linux-arm64", "v8.1.0", "arm64"))},
		{"a pre-release", nil, cmd(func(c *UploadPackage) { c.Version = "v8.1.0-alpha.1" }),
			thenEvents(uploaded("dm-v8.1.0-alpha.1-linux-amd64", "v8.1.0-alpha.1", "amd64"))},

		{"upper-case name", nil, cmd(func(c *UploadPackage) { c.Name = "DM" }),
			thenError(Invalid, `package name "DM" is invalid`)},
		{"name with a path", nil, cmd(func(c *UploadPackage) { c.Name = "../dm" }),
			thenError(Invalid, `package name "../dm" is invalid`)},
		{"empty name", nil, cmd(func(c *UploadPackage) { c.Name = "" }),
			thenError(Invalid, `package name "" is invalid`)},
		{"version without v", nil, cmd(func(c *UploadPackage) { c.Version = "8.1.0" }),
			thenError(Invalid, `version "8.1.0" is invalid: use v<major>.<minor>.<patch>, e.g. v8.1.0`)},
		{"version without patch", nil, cmd(func(c *UploadPackage) { c.Version = "v8.1" }),
			thenError(Invalid, `version "v8.1" is invalid`)},
		{"version with a shell metacharacter", nil, cmd(func(c *UploadPackage) { c.Version = "v8.1.0;rm" }),
			thenError(Invalid, `version "v8.1.0;rm" is invalid`)},
		{"version with a path", nil, cmd(func(c *UploadPackage) { c.Version = "v8.1.0/../x" }),
			thenError(Invalid, `version "v8.1.0/../x" is invalid`)},
		{"os other than linux", nil, cmd(func(c *UploadPackage) { c.OS = "darwin" }),
			thenError(Invalid, `package os "darwin" is not supported: use linux`)},
		{"arch by its uname name", nil, cmd(func(c *UploadPackage) { c.Arch = "x86_64" }),
			thenError(Invalid, `package arch "x86_64" is not supported: use amd64 or arm64`)},
		{"no arch", nil, cmd(func(c *UploadPackage) { c.Arch = "" }),
			thenError(Invalid, `package arch "" is not supported`)},
		{"short checksum", nil, cmd(func(c *UploadPackage) { c.SHA256 = "abc" }),
			thenError(Invalid, "package dm v8.1.0: checksum, object and size are required")},
		{"upper-case checksum", nil, cmd(func(c *UploadPackage) { c.SHA256 = strings.ToUpper(sha) }),
			thenError(Invalid, "checksum, object and size are required")},
		{"no object", nil, cmd(func(c *UploadPackage) { c.Object = "" }),
			thenError(Invalid, "checksum, object and size are required")},
		{"no size", nil, cmd(func(c *UploadPackage) { c.Size = 0 }),
			thenError(Invalid, "checksum, object and size are required")},

		{"already uploaded", []Event{dmUploaded("v8.1.0", "amd64")}, cmd(nil),
			thenError(Conflict, "package dm-v8.1.0-linux-amd64 is already uploaded (sha256 "+strings.Repeat("ab", 32)+")", "upload a new version instead")},
		{"already uploaded, with other bytes", []Event{dmUploaded("v8.1.0", "amd64")},
			cmd(func(c *UploadPackage) { c.SHA256, c.Size = strings.Repeat("cd", 32), 42 }),
			thenError(Conflict, "package dm-v8.1.0-linux-amd64 is already uploaded")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecideUploadPackage(packageState(tt.given), tt.when)
			tt.then.check(t, got, err)
		})
	}
}

func TestEvolvePackage(t *testing.T) {
	e := dmUploaded("v8.1.0", "amd64")
	e.Files = []PackageFile{{Path: "dm-master-v8.1.0-linux-amd64.tar.gz", Size: 10, Mode: 0o644, SHA256: strings.Repeat("1", 64)}}
	want := Package{ID: "dm-v8.1.0-linux-amd64", Name: "dm", Version: "v8.1.0", OS: "linux", Arch: "amd64", SHA256: e.SHA256,
		Size: e.Size, Object: e.Object, Components: []string{"dm-master", "dm-worker"}, Files: e.Files, Group: DefaultGroup}
	got := EvolvePackage(Package{}, e)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("state =\n  %+v\nwant\n  %+v", got, want)
	}
	if again := *packageState([]Event{e}); !reflect.DeepEqual(again, got) {
		t.Errorf("folding the same event again gave\n  %+v\nthe first fold gave\n  %+v", again, got)
	}
	if p := packageState(nil); p != nil {
		t.Errorf("no history gives %+v, want no package", p)
	}
}
