package domain

import (
	"fmt"
	"slices"
	"strings"
)

// Directories dmgr owns. A deploy (or scale-out) creates each instance's
// directories only where they are absent or empty, and writes a marker
// file into each one it creates; destroy and scale-in remove a directory
// only when it carries the marker of its cluster and instance, and leave
// (and report) every other one.

// MarkerFile is the name of the marker dmgr writes, as root, into each
// directory it creates for an instance.
const MarkerFile = ".dmgr-owned"

// DirMark is what a step that checks, creates or removes instance
// directories needs to know about their markers.
type DirMark struct {
	Cluster string `json:"cluster"`
	// Operation is the deploy or scale-out that creates the directories
	// (check_host, make_dirs): a retried one finds its own marker and
	// continues.
	Operation string `json:"operation,omitempty"`
	// Dirs are the directories that carry the marker, or will: each
	// instance directory that is not inside another one of the instance.
	Dirs []string `json:"dirs"`
	// Imported: the instance was taken over from tiup-dm (import.go), so
	// its directories never got dmgr's marker; a removal takes a directory
	// that carries no marker at all as the instance's.
	Imported bool `json:"imported,omitempty"`
}

// Marker is a marker file as a host holds it.
type Marker struct {
	Cluster   string
	Instance  string
	Operation string
}

// MarkerContent is the marker file dmgr writes into a directory it
// creates for instance (an instance id, "host:port") of the mark's
// cluster.
func (m DirMark) MarkerContent(instance string) string {
	return fmt.Sprintf("# Created by dmgr for an instance of a DM cluster; destroying the cluster removes this directory.\ncluster=%s\ninstance=%s\noperation=%s\n",
		m.Cluster, instance, m.Operation)
}

// The kinds of a probed directory.
const (
	DirAbsent  = "absent"
	DirEmpty   = "empty"
	DirFull    = "full" // a directory with entries
	DirNotDir  = "notdir"
	DirSymlink = "symlink"
)

// DirProbe is what a host says about a directory.
type DirProbe struct {
	Path string
	Kind string // Dir* constant
	// Real is Path with every symbolic link resolved (its missing part kept
	// as it is).
	Real string
	// Marker is the directory's marker file when it is a regular file (not
	// a link); nil otherwise. MarkerOwner is the user that owns it.
	Marker      *Marker
	MarkerOwner string
}

// trustedMarker is the probe's marker when root wrote it or the deploy
// user owns it (the deploy user owns every file of an instance, and
// unpacking a component into its directory may give it the marker too);
// a marker anyone else owns speaks for nobody. The second result says why
// a marker is not taken.
func (p DirProbe) trustedMarker(user string) (*Marker, string) {
	switch {
	case p.Marker == nil:
		return nil, ""
	case p.MarkerOwner == "root" || p.MarkerOwner == user && user != "":
		return p.Marker, ""
	}
	return nil, fmt.Sprintf("its marker is owned by %s, neither root nor the deploy user", p.MarkerOwner)
}

// DeployProblem says why a deploy (or scale-out) must not take the
// directory p for the deploy user, or "": it must be absent, empty, or
// carry the marker that this very operation wrote (a retry), and resolve
// to a path that may be an instance directory.
func (m DirMark) DeployProblem(p DirProbe, user string) string {
	switch p.Kind {
	case DirSymlink:
		return fmt.Sprintf("directory %s is a symbolic link: give the instance a real directory", p.Path)
	case DirNotDir:
		return fmt.Sprintf("%s exists and is not a directory: remove it or choose another directory", p.Path)
	}
	if p.Real != p.Path {
		if err := ValidateOwnedDir(p.Real, user); err != nil {
			return fmt.Sprintf("directory %s resolves to %s: %s", p.Path, p.Real, ErrorMessage(err))
		}
	}
	switch p.Kind {
	case DirAbsent, DirEmpty:
		return ""
	case DirFull:
		mk, untrusted := p.trustedMarker(user)
		if mk != nil && mk.Cluster == m.Cluster && mk.Operation == m.Operation && m.Operation != "" {
			return ""
		}
		why := "it holds files that dmgr did not put there"
		if untrusted != "" {
			why += "; " + untrusted
		} else if mk != nil && mk.Cluster != "" {
			why = fmt.Sprintf("it belongs to cluster %s (instance %s, operation %s)", mk.Cluster, mk.Instance, mk.Operation)
		}
		return fmt.Sprintf("directory %s is not empty (%s): dmgr deploys only into an absent or empty directory; empty it, remove it or choose another directory", p.Path, why)
	}
	return fmt.Sprintf("directory %s: the host reported it as %q", p.Path, p.Kind)
}

// RemovalProblem says why removing an instance's directory must leave p
// alone, or "". mark is the probe of the directory whose marker speaks
// for p (MarkDirFor; p itself, usually). Only a directory that is still
// there, no symbolic link, resolves to a path that may be an instance
// directory and carries the marker of this cluster and instance is
// removed — or, for an instance taken over from tiup-dm (m.Imported),
// carries no marker at all.
func (m DirMark) RemovalProblem(p, mark DirProbe, instance, user string) string {
	switch p.Kind {
	case DirAbsent:
		return ""
	case DirSymlink:
		return "it is a symbolic link"
	case DirNotDir:
		return "it is not a directory"
	}
	if err := ValidateOwnedDir(p.Real, user); err != nil {
		return fmt.Sprintf("it resolves to %s: %s", p.Real, ErrorMessage(err))
	}
	where := "it"
	if mark.Path != p.Path {
		where = "the directory " + mark.Path + " that holds it"
		if mark.Kind == DirSymlink {
			return where + " is a symbolic link"
		}
	}
	mk, untrusted := mark.trustedMarker(user)
	switch {
	case untrusted != "" && where == "it":
		return untrusted
	case untrusted != "":
		return where + ": " + untrusted
	case mk == nil && mark.Marker == nil && m.Imported:
		return "" // an imported instance's directory: tiup wrote no marker, dmgr writes none
	case mk == nil || mk.Cluster == "":
		return where + " carries no marker of dmgr's: dmgr did not create it"
	case mk.Cluster != m.Cluster:
		return fmt.Sprintf("%s carries the marker of cluster %s", where, mk.Cluster)
	case mk.Instance != instance:
		return fmt.Sprintf("%s carries the marker of instance %s of cluster %s", where, mk.Instance, mk.Cluster)
	}
	return ""
}

// MarkDirFor returns the directory whose marker speaks for dir: dir
// itself when it is one of the mark's directories or outside all of them,
// else the mark's directory that holds it.
func (m DirMark) MarkDirFor(dir string) string {
	if slices.Contains(m.Dirs, dir) {
		return dir
	}
	for _, d := range m.Dirs {
		if dirIsUnder(dir, d) {
			return d
		}
	}
	return dir
}

// topDirs returns the directories of dirs that are not inside another one
// of them, in their order, without repeats.
func topDirs(dirs []string) []string {
	var out []string
	for _, d := range dirs {
		if slices.Contains(out, d) || slices.ContainsFunc(dirs, func(o string) bool { return dirIsUnder(d, o) }) {
			continue
		}
		out = append(out, d)
	}
	return out
}

// markOperation records the operation that creates the directories in the
// marks of a plan's check_host and make_dirs steps.
func markOperation(plan []Step, operation string) {
	for i := range plan {
		if m := plan[i].Mark; m != nil && (plan[i].Kind == StepCheckHost || plan[i].Kind == StepMakeDirs) {
			cp := *m
			cp.Operation = operation
			plan[i].Mark = &cp
		}
	}
}

// ParseMarker reads a marker file's content: its cluster=, instance= and
// operation= lines (the first of each).
func ParseMarker(content string) Marker {
	var m Marker
	for _, line := range strings.Split(content, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch k {
		case "cluster":
			if m.Cluster == "" {
				m.Cluster = v
			}
		case "instance":
			if m.Instance == "" {
				m.Instance = v
			}
		case "operation":
			if m.Operation == "" {
				m.Operation = v
			}
		}
	}
	return m
}
