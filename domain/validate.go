package domain

import (
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Small validators shared by the domain. Each returns nil or an *Error with
// code Invalid whose message names the value and says what is allowed.

var (
	clusterNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$`)
	userRE        = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	hostLabelRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	allDigitsRE   = regexp.MustCompile(`^[0-9]+$`)
)

// maxRemotePath bounds the length of a remote path (Linux PATH_MAX is 4096;
// dmgr's paths are far shorter).
const maxRemotePath = 1024

// ValidateClusterName checks a cluster name: 1-64 letters, digits, '.', '_'
// or '-', starting with a letter or digit.
func ValidateClusterName(s string) error {
	if !clusterNameRE.MatchString(s) {
		return Errorf(Invalid, "cluster name %q is invalid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", s)
	}
	return nil
}

// ValidateHost checks that s is an IPv4 or IPv6 address literal (without
// brackets or zone) or an RFC 1123 host name: labels of letters, digits and
// '-' (not at either end of a label), at most 63 characters each and 253 in
// all, separated by '.'.
func ValidateHost(s string) error {
	const what = "use an IPv4 or IPv6 address or a host name of letters, digits, '-' and '.'"
	if s == "" {
		return Errorf(Invalid, "host is empty: %s", what)
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return Errorf(Invalid, "host %q is invalid: IPv6 zones are not supported; %s", s, what)
		}
		return nil
	}
	if len(s) > 253 {
		return Errorf(Invalid, "host %q is invalid: it is longer than 253 characters", s)
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if !hostLabelRE.MatchString(l) {
			return Errorf(Invalid, "host %q is invalid: %s", s, what)
		}
	}
	// A top-level label is never all digits: "256.1.1.1" or "10.0.0" is a
	// mistyped address, not a host name.
	if allDigitsRE.MatchString(labels[len(labels)-1]) {
		return Errorf(Invalid, "host %q is invalid: it is not a valid IP address; %s", s, what)
	}
	return nil
}

// ValidateUser checks a POSIX login name: a lower-case letter or '_', then up
// to 31 lower-case letters, digits, '_' or '-'.
func ValidateUser(s string) error {
	if !userRE.MatchString(s) {
		return Errorf(Invalid, "user %q is invalid: use a login name of up to 32 lower-case letters, digits, '_' or '-', starting with a letter or '_'", s)
	}
	return nil
}

// ValidatePort checks that p is a TCP port number, 1-65535.
func ValidatePort(p int) error {
	if p < 1 || p > 65535 {
		return Errorf(Invalid, "port %d is out of range: use 1-65535", p)
	}
	return nil
}

// ValidateRemotePath checks a path on a target machine: absolute, clean, no
// ".." segment, and only the characters A-Z a-z 0-9 . _ / + @ -. dmgr quotes
// every remote argument as well; refusing shell metacharacters here is a
// second line of defence.
func ValidateRemotePath(s string) error {
	if reason := remotePathProblem(s); reason != "" {
		return Errorf(Invalid, "path %q is invalid: %s", s, reason)
	}
	return nil
}

// remotePathProblem says what is wrong with the absolute path s, or "".
func remotePathProblem(s string) string {
	if s == "" {
		return "it is empty"
	}
	if len(s) > maxRemotePath {
		return "it is longer than 1024 characters"
	}
	for _, r := range s {
		if !remotePathChar(r) {
			return "it contains " + describeRune(r) + "; use only letters, digits and . _ / + @ -"
		}
	}
	if !strings.HasPrefix(s, "/") {
		return "it must be absolute (start with /)"
	}
	for _, seg := range strings.Split(s, "/") {
		if seg == ".." {
			return `it contains a ".." segment`
		}
	}
	if c := path.Clean(s); c != s {
		return "it is not clean; write it as " + c
	}
	return ""
}

// systemTrees are the directories that neither are nor hold a directory
// dmgr owns: an instance's directories are chowned to the deploy user and
// removed on destroy. Every top-level directory whose name starts with
// "lib" (/lib, /lib32, /lib64, /libx32, /libexec) is one as well.
var systemTrees = []string{"/bin", "/boot", "/dev", "/etc", "/proc", "/root", "/run", "/sbin", "/sys", "/usr",
	"/var/lock", "/var/run"}

// sharedDirectories may hold directories dmgr owns but never be one.
var sharedDirectories = []string{"/", "/home", "/media", "/mnt", "/opt", "/srv", "/tmp", "/var",
	"/var/backups", "/var/cache", "/var/lib", "/var/local", "/var/log", "/var/mail", "/var/opt", "/var/spool", "/var/tmp"}

// ownedDirAdvice ends every message that refuses an instance directory.
const ownedDirAdvice = "give the instance a directory of its own (e.g. under /srv, or relative to the deploy user's home)"

// ValidateOwnedDir checks a directory dmgr is to create, own and, on
// destroy, remove on a host for the deploy user: a valid remote path (see
// ValidateRemotePath) that is not a system directory, nor inside one of
// /bin, /boot, /dev, /etc, /lib*, /proc, /root, /run, /sbin, /sys, /usr,
// nor a user's home directory (/home/<name>).
func ValidateOwnedDir(dir, user string) error {
	if reason := remotePathProblem(dir); reason != "" {
		return Errorf(Invalid, "path %q is invalid: %s", dir, reason)
	}
	if reason := ownedDirProblem(dir, user); reason != "" {
		return Errorf(Invalid, "%s; %s", reason, ownedDirAdvice)
	}
	return nil
}

// ownedDirProblem says why the clean absolute path dir cannot be a
// directory dmgr owns, or "".
func ownedDirProblem(dir, user string) string {
	if tree := systemTreeOf(dir); tree == dir {
		return dir + " is a system directory"
	} else if tree != "" {
		return dir + " is inside the system directory " + tree
	}
	switch {
	case dir == "/":
		return "/ is the root directory"
	case user != "" && dir == userHome(user):
		return dir + " is the home directory of the deploy user " + user
	case path.Dir(dir) == "/home":
		return dir + " is a user's home directory"
	case slices.Contains(sharedDirectories, dir):
		return dir + " is a system directory"
	}
	return ""
}

// systemTreeOf returns the system tree (see systemTrees) that dir is or is
// inside, or "".
func systemTreeOf(dir string) string {
	for _, t := range systemTrees {
		if dir == t || strings.HasPrefix(dir, t+"/") {
			return t
		}
	}
	first, _, _ := strings.Cut(strings.TrimPrefix(dir, "/"), "/")
	if strings.HasPrefix(first, "lib") {
		return "/" + first
	}
	return ""
}

// baseDirProblem says why the clean absolute path dir cannot be a base
// directory (a global deploy_dir, data_dir or log_dir, in which each
// instance gets a directory of its own), or "".
func baseDirProblem(dir string) string {
	if dir == "/" {
		return "/ is the root directory: instance directories may not be made directly in it"
	}
	if tree := systemTreeOf(dir); tree == dir {
		return dir + " is a system directory: instance directories may not be made in it"
	} else if tree != "" {
		return dir + " is inside the system directory " + tree
	}
	return ""
}

// relPathProblem says what is wrong with the relative path s (one that is
// joined to a base directory), or "".
func relPathProblem(s string) string {
	if strings.HasPrefix(s, "/") {
		return "it must be relative"
	}
	if s == "" {
		return "it is empty"
	}
	if reason := remotePathProblem("/" + s); reason != "" {
		if !strings.HasPrefix(reason, "it is not clean") {
			return reason
		}
		if c := path.Clean("/" + s); c != "/" {
			return "it is not clean; write it as " + strings.TrimPrefix(c, "/")
		}
		return "it must name a directory below the base directory"
	}
	return ""
}

// remotePathChar reports whether r may appear in a remote path.
func remotePathChar(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	case r == '.', r == '_', r == '/', r == '+', r == '@', r == '-':
		return true
	}
	return false
}

// describeRune names a refused character in a message.
func describeRune(r rune) string {
	switch r {
	case ' ':
		return "a space"
	case '\n':
		return "a newline"
	case '\t':
		return "a tab"
	}
	return strconv.QuoteRune(r)
}

// DefaultMaxInstancesPerCluster is the instance cap of a cluster when the
// server sets none (dmgr server --max-instances-per-cluster).
const DefaultMaxInstancesPerCluster = 500

// CheckInstanceCap refuses a cluster that would have more than limit
// instances (DefaultMaxInstancesPerCluster when limit ≤ 0): existing is
// what the cluster has, adding what the command adds.
func CheckInstanceCap(cluster string, existing, adding, limit int) error {
	if limit <= 0 {
		limit = DefaultMaxInstancesPerCluster
	}
	if existing+adding <= limit {
		return nil
	}
	if existing == 0 {
		return Errorf(Invalid, "topology has %d instances, more than the limit of %d instances per cluster: split it into several clusters",
			adding, limit)
	}
	return Errorf(Invalid, "cluster %s has %d instances and the scale-out adds %d: %d is more than the limit of %d instances per cluster",
		cluster, existing, adding, existing+adding, limit)
}
