package pkgstore

import (
	"regexp"
	"strings"

	"github.com/dmgr/dmgr/domain"
)

var (
	// nameVersionRe splits "<name>-v<major>.<minor>.<patch>[-suffix]"; the
	// lazy name makes the version start at the first "-v" that can start one.
	nameVersionRe = regexp.MustCompile(`^(.*?)-(v(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)(?:-[0-9A-Za-z]+(?:[.-][0-9A-Za-z]+)*)?)$`)
	nameRe        = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	// platformRe is the "-<os>-<arch>" that release tarballs append.
	platformRe = regexp.MustCompile(`-(?:linux|darwin)-(?:amd64|arm64|386|arm|ppc64le|s390x|riscv64|loong64)$`)
)

// ParseName splits a package file name such as "dm-v2.0.1.tar.gz" or
// "dm-v8.1.0-linux-amd64.tar.gz" into its name ("dm") and version
// ("v2.0.1", "v8.1.0"). The version is v<major>.<minor>.<patch> with an
// optional "-suffix" ("v8.1.0-alpha", "v5.0.0-rc.1"); a trailing
// "-<os>-<arch>" is dropped. ".tgz" is accepted for ".tar.gz".
func ParseName(s string) (name, version string, err error) {
	const example = "like dm-v2.0.1.tar.gz"
	if s == "" {
		return "", "", domain.Errorf(domain.Invalid, "package file name is empty; expected a name %s", example)
	}
	if strings.ContainsAny(s, `/\`) {
		return "", "", domain.Errorf(domain.Invalid, "package file name %q is a path; send the file name only, %s", s, example)
	}
	stem, ok := strings.CutSuffix(s, ".tar.gz")
	if !ok {
		stem, ok = strings.CutSuffix(s, ".tgz")
	}
	if !ok {
		return "", "", domain.Errorf(domain.Invalid, "package file name %q must end in .tar.gz, %s", s, example)
	}
	stem = platformRe.ReplaceAllString(stem, "")
	m := nameVersionRe.FindStringSubmatch(stem)
	if m == nil {
		return "", "", domain.Errorf(domain.Invalid,
			"package file name %q has no version: expected <name>-v<major>.<minor>.<patch>[-suffix].tar.gz, %s", s, example)
	}
	name, version = m[1], m[2]
	if !nameRe.MatchString(name) || strings.HasSuffix(name, "-") {
		return "", "", domain.Errorf(domain.Invalid,
			"package file name %q: name %q must start with a lowercase letter and hold only lowercase letters, digits and inner '-'", s, name)
	}
	return name, version, nil
}
