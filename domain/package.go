package domain

import (
	"fmt"
	"regexp"
)

// Package is an uploaded offline DM package (seed 000 layout).
type Package struct {
	ID         string        `json:"id"`
	Name       string        `json:"name"`
	Version    string        `json:"version"`
	OS         string        `json:"os"`
	Arch       string        `json:"arch"`
	SHA256     string        `json:"sha256"`
	Size       int64         `json:"size"`
	Object     string        `json:"object"`
	Components []string      `json:"components"`
	Files      []PackageFile `json:"files,omitempty"`
	// Group owns the package (OwnerGroup of what its events named).
	Group string `json:"group"`
}

// PackageFile is one file of a package's manifest.
type PackageFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	Mode   uint32 `json:"mode"`
	SHA256 string `json:"sha256"`
}

// PackageID is the aggregate id of a package: name-version-os-arch.
func PackageID(name, version, os, arch string) string {
	return fmt.Sprintf("%s-%s-%s-%s", name, version, os, arch)
}

// DMPackageName is the name of the offline DM package (dm-vX.Y.Z.tar.gz).
const DMPackageName = "dm"

var (
	packageNameRE    = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	packageVersionRE = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]{1,32})?$`)
	archRE           = regexp.MustCompile(`^(amd64|arm64)$`)
	sha256RE         = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ValidatePackageVersion checks a DM version such as v8.1.0 or v8.1.0-alpha.
func ValidatePackageVersion(v string) error {
	if !packageVersionRE.MatchString(v) {
		return Errorf(Invalid, "version %q is invalid: use v<major>.<minor>.<patch>, e.g. v8.1.0", v)
	}
	return nil
}

// UploadPackage records a package whose bytes are already in the object
// store and whose archive was already checked.
type UploadPackage struct {
	Name, Version, OS, Arch string
	SHA256                  string
	Size                    int64
	Object                  string
	Components              []string
	Files                   []PackageFile
	Group                   string // the group that will own it ("" is DefaultGroup)
}

// PackageUploaded: a package was stored and may be deployed.
type PackageUploaded struct {
	ID         string        `json:"id"`
	Name       string        `json:"name"`
	Version    string        `json:"version"`
	OS         string        `json:"os"`
	Arch       string        `json:"arch"`
	SHA256     string        `json:"sha256"`
	Size       int64         `json:"size"`
	Object     string        `json:"object"`
	Components []string      `json:"components"`
	Files      []PackageFile `json:"files,omitempty"`
	Group      string        `json:"group,omitempty"`
}

// DecideUploadPackage decides an UploadPackage against the package's state
// (nil when no package with that id exists).
func DecideUploadPackage(p *Package, c UploadPackage) ([]Event, error) {
	if !packageNameRE.MatchString(c.Name) {
		return nil, Errorf(Invalid, "package name %q is invalid: use lower-case letters, digits and '-'", c.Name)
	}
	if err := ValidatePackageVersion(c.Version); err != nil {
		return nil, err
	}
	if c.OS != "linux" {
		return nil, Errorf(Invalid, "package os %q is not supported: use linux", c.OS)
	}
	if !archRE.MatchString(c.Arch) {
		return nil, Errorf(Invalid, "package arch %q is not supported: use amd64 or arm64", c.Arch)
	}
	if !sha256RE.MatchString(c.SHA256) || c.Object == "" || c.Size <= 0 {
		return nil, Errorf(Invalid, "package %s %s: checksum, object and size are required", c.Name, c.Version)
	}
	id := PackageID(c.Name, c.Version, c.OS, c.Arch)
	if p != nil {
		return nil, Errorf(Conflict, "package %s is already uploaded (sha256 %s); upload a new version instead", id, p.SHA256)
	}
	return []Event{PackageUploaded{ID: id, Name: c.Name, Version: c.Version, OS: c.OS, Arch: c.Arch,
		SHA256: c.SHA256, Size: c.Size, Object: c.Object, Components: c.Components, Files: c.Files, Group: c.Group}}, nil
}

// EvolvePackage folds one event into a package's state.
func EvolvePackage(p Package, e Event) Package {
	switch e := e.(type) {
	case PackageUploaded:
		p = Package{ID: e.ID, Name: e.Name, Version: e.Version, OS: e.OS, Arch: e.Arch, SHA256: e.SHA256,
			Size: e.Size, Object: e.Object, Components: e.Components, Files: e.Files, Group: OwnerGroup(e.Group)}
	case OwnerMoved:
		p.Group = e.To
	}
	return p
}
