package pkgstore

import (
	"encoding/hex"
	"path"
	"slices"
	"strings"

	"github.com/dmgr/dmgr/domain"
)

// layoutDirs are the top-level directories of a package laid out at the
// archive root. An archive whose entries all sit under one of them keeps it:
// "bin/" is not taken for a top directory to strip.
var layoutDirs = map[string]bool{"bin": true, "conf": true, "template": true, "others": true}

// required are the entries that make a DM package, in the order checked.
var required = []string{"bin/dm-master", "bin/dm-worker"}

// manifest runs the checks that need the whole package (top directory,
// entries under links, where symlinks lead, required files, the size of
// the manifest) and builds the Manifest.
func (in *inspector) manifest() (Manifest, error) {
	a := in.top
	in.stripTopDir()
	if err := a.checkTree(a.entries); err != nil {
		return Manifest{}, err
	}
	byPath := make(map[string]*entry, len(a.entries))
	for _, e := range a.entries {
		byPath[e.path] = e
	}
	for _, p := range required {
		e := byPath[p]
		if e == nil {
			return Manifest{}, domain.Errorf(domain.Invalid, "%s lacks %s; a DM package needs bin/dm-master and bin/dm-worker", in.subject, p)
		}
		if e.kind != kindFile && e.kind != kindHardlink {
			return Manifest{}, a.entryError(e.raw, "must be a regular file, not a %s", e.kind)
		}
	}

	m := Manifest{
		SHA256: hex.EncodeToString(in.src.hash.Sum(nil)),
		Size:   in.src.n,
		Files:  []File{},
	}
	comps := map[string]bool{}
	for _, e := range a.entries {
		if e.kind != kindFile && e.kind != kindHardlink {
			continue
		}
		m.Files = append(m.Files, File{Path: e.path, Size: e.size, Mode: e.mode, SHA256: e.sum})
		switch dir, base := path.Split(e.path); {
		case dir == "bin/":
			comps[base] = true
		case e.path == "grafana.tar.gz":
			comps["grafana"] = true
		case e.path == "others/dmctl":
			comps["dmctl"] = true
		}
	}
	slices.SortFunc(m.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	for c := range comps {
		m.Components = append(m.Components, c)
	}
	slices.Sort(m.Components)
	if n := m.JSONSize(); n > in.lim.MaxManifestBytes {
		return Manifest{}, domain.Errorf(domain.TooLarge,
			"%s: its manifest (%d files) takes %d bytes, over the limit of %s that keeps the event recording it within the bus's message size; use fewer files or shorter paths",
			in.subject, len(m.Files), n, fmtSize(in.lim.MaxManifestBytes))
	}
	return m, nil
}

// checkTree runs the checks that need all of an archive's entries, with
// their final paths: nothing may be written through a symlink or under a
// file, and every symlink must resolve inside the archive.
func (a *archive) checkTree(entries []*entry) error {
	byPath := make(map[string]*entry, len(entries))
	for _, e := range entries {
		byPath[e.path] = e
	}
	// Extracting "conf2/x" after the symlink "conf2" would write wherever
	// it points.
	for _, e := range entries {
		for i := strings.IndexByte(e.path, '/'); i >= 0; i = nextSlash(e.path, i) {
			up := byPath[e.path[:i]]
			switch {
			case up == nil || up.kind == kindDir:
			case up.kind == kindSymlink:
				return a.entryError(e.raw, "lies under the symlink %q; files may not be placed through links", up.raw)
			default:
				return a.entryError(e.raw, "lies under %q, which is a %s, not a directory", up.raw, up.kind)
			}
		}
	}
	steps := 0
	for _, e := range entries {
		if e.kind != kindSymlink {
			continue
		}
		if why := resolve(byPath, path.Dir(e.path), e.link, &steps, a.noun()); why != "" {
			return a.entryError(e.raw, "symlink target %q %s", e.link, why)
		}
	}
	return nil
}

func nextSlash(s string, i int) int {
	j := strings.IndexByte(s[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// stripTopDir removes one directory that every entry lives under
// ("dm-v2.0.1/bin/dm-master" → "bin/dm-master"), unless it is one of
// layoutDirs.
func (in *inspector) stripTopDir() {
	a := in.top
	if len(a.entries) == 0 {
		return
	}
	top, _, _ := strings.Cut(a.entries[0].path, "/")
	if layoutDirs[top] {
		return
	}
	for _, e := range a.entries {
		first, _, found := strings.Cut(e.path, "/")
		if first != top || (!found && e.kind != kindDir) {
			return
		}
	}
	kept := a.entries[:0]
	for _, e := range a.entries {
		_, rest, found := strings.Cut(e.path, "/")
		if !found {
			continue // the top directory itself
		}
		e.path = rest
		if e.kind == kindHardlink {
			// The target is an earlier regular file, so it is under top too.
			_, e.link, _ = strings.Cut(e.link, "/")
		}
		kept = append(kept, e)
	}
	a.entries = kept
}

// resolve follows target from the directory dir (relative to the archive
// root, "." for the root) the way the kernel would once the archive is
// unpacked, following the archive's own symlinks on the way, and says why
// the result is refused: it leaves the archive (noun: "package" or
// "archive"), or the links loop. steps counts path components walked
// across all calls, so that an archive cannot make the check itself
// expensive.
func resolve(byPath map[string]*entry, dir, target string, steps *int, noun string) string {
	var cur []string
	if dir != "." {
		cur = strings.Split(dir, "/")
	}
	todo := strings.Split(target, "/")
	hops := 0
	for len(todo) > 0 {
		*steps++
		if *steps > maxLinkSteps {
			return "leads through too many symlinks to check"
		}
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return "points outside the " + noun
			}
			cur = cur[:len(cur)-1]
			continue
		}
		cur = append(cur, c)
		e := byPath[strings.Join(cur, "/")]
		if e == nil || e.kind != kindSymlink {
			continue
		}
		if hops++; hops > maxLinkHops {
			return "leads through too many symlinks (a loop?)"
		}
		cur = cur[:len(cur)-1]
		if strings.HasPrefix(e.link, "/") {
			return "points outside the " + noun
		}
		todo = append(strings.Split(e.link, "/"), todo...)
	}
	return ""
}
