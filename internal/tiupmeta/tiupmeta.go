// Package tiupmeta reads the meta.yaml that tiup-dm keeps for each
// cluster it manages (~/.tiup/storage/dm/clusters/<name>/meta.yaml): tiup's
// DMMeta (components/dm/spec/cluster.go, Metadata) — the deploy user, the
// DM version and the topology as deployed, every directory filled in:
//
//	user: tidb
//	dm_version: v8.1.0
//	topology:
//	    global:
//	        user: tidb
//	        deploy_dir: /home/tidb/dm/deploy
//	        ...
//	    master_servers:
//	        - host: 10.0.1.11
//	          deploy_dir: /home/tidb/dm/deploy/dm-master-8261
//	          ...
//
// Parse returns what an import needs: the user, the version and the
// topology section as a tiup-dm topology text that domain.ParseTopology
// reads, every error located at its line of meta.yaml.
package tiupmeta

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/dmgr/dmgr/domain"
)

// MaxSize bounds a meta.yaml (a few KiB for a large cluster).
const MaxSize = 1 << 20

// Meta is what an import takes from a meta.yaml.
type Meta struct {
	// User is the deploy user (meta.yaml's user): the user tiup-dm logs in
	// as and runs the cluster's processes as.
	User string
	// Version is meta.yaml's dm_version: the DM version the cluster runs.
	Version string
	// Topology is the topology section, de-indented, as a tiup-dm topology
	// (the YAML `tiup dm deploy` takes, with every directory as deployed).
	// Its line n is line n+TopologyLine-1 of meta.yaml; the sections dmgr
	// does not manage (Ignored) are blank lines.
	Topology     string
	TopologyLine int
	// Parsed is Topology as domain.ParseTopology reads it.
	Parsed *domain.Topology
	// Ignored names the sections of the topology that dmgr leaves to
	// whatever runs them (monitored: tiup's node_exporter and
	// blackbox_exporter, which dmgr does not manage).
	Ignored []string
}

// ignoredSections are topology sections tiup-dm may write that dmgr does
// not manage: they are left out of the topology it records.
var ignoredSections = map[string]bool{"monitored": true, "component_sources": true}

var yamlLineErrRE = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)

// Parse reads a meta.yaml. Its errors are domain errors with code Invalid
// whose message starts with "meta.yaml line N:" where a line is known.
func Parse(text string) (Meta, error) {
	if len(text) > MaxSize {
		return Meta{}, domain.Errorf(domain.Invalid, "meta.yaml is %d bytes; at most %d are accepted", len(text), MaxSize)
	}
	if strings.TrimSpace(text) == "" {
		return Meta{}, domain.Errorf(domain.Invalid, "meta.yaml is empty: give the file tiup-dm keeps in ~/.tiup/storage/dm/clusters/<name>/meta.yaml")
	}
	root, err := decode(text)
	if err != nil {
		return Meta{}, err
	}
	if root.Kind != yaml.MappingNode {
		return Meta{}, lineErr(root.Line, "want a mapping with user, dm_version and topology, as tiup-dm writes it")
	}
	var m Meta
	var topoKey, topoNode *yaml.Node
	var userLine, versionLine int
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return Meta{}, lineErr(k.Line, "want a key name")
		}
		if first, dup := seen[k.Value]; dup {
			return Meta{}, lineErr(k.Line, "key %q is repeated (first at line %d)", k.Value, first)
		}
		seen[k.Value] = k.Line
		switch k.Value {
		case "user":
			if m.User, err = scalar(k, v); err != nil {
				return Meta{}, err
			}
			userLine = v.Line
		case "dm_version":
			if m.Version, err = scalar(k, v); err != nil {
				return Meta{}, err
			}
			versionLine = v.Line
		case "topology":
			topoKey, topoNode = k, v
		case "tidb_version":
			return Meta{}, lineErr(k.Line, "tidb_version is the key of tiup-cluster's meta.yaml (a TiDB cluster), not tiup-dm's: give the meta.yaml of a DM cluster, from ~/.tiup/storage/dm/clusters/<name>/")
		case "version":
			return Meta{}, lineErr(k.Line, `unknown key "version"; tiup-dm writes the DM version as dm_version`)
		default:
			return Meta{}, lineErr(k.Line, "unknown key %q: a tiup-dm meta.yaml has user, dm_version and topology", k.Value)
		}
	}
	switch {
	case m.User == "":
		return Meta{}, domain.Errorf(domain.Invalid, "meta.yaml: user is missing: tiup-dm writes the deploy user there")
	case m.Version == "":
		return Meta{}, domain.Errorf(domain.Invalid, "meta.yaml: dm_version is missing: tiup-dm writes the cluster's DM version there (e.g. dm_version: v8.1.0)")
	case topoNode == nil:
		return Meta{}, domain.Errorf(domain.Invalid, "meta.yaml: topology is missing: tiup-dm writes the cluster's topology there")
	}
	if err := domain.ValidateUser(m.User); err != nil {
		return Meta{}, lineErr(userLine, "user: %s", domain.ErrorMessage(err))
	}
	if err := domain.ValidatePackageVersion(m.Version); err != nil {
		return Meta{}, lineErr(versionLine, "dm_version: %s", domain.ErrorMessage(err))
	}
	if topoNode.Kind == yaml.AliasNode || topoNode.Kind != yaml.MappingNode || len(topoNode.Content) == 0 {
		return Meta{}, lineErr(topoKey.Line, "topology: want the cluster's topology (a mapping with global, master_servers, ...), got %s", describe(topoNode))
	}
	if m.Topology, m.TopologyLine, m.Ignored, err = topologyText(text, root, topoKey, topoNode); err != nil {
		return Meta{}, err
	}
	if m.Parsed, err = domain.ParseTopology(m.Topology); err != nil {
		return Meta{}, relocate(err, m.TopologyLine)
	}
	if m.Parsed.Global.User != m.User {
		return Meta{}, lineErr(userLine, "user is %s, but the topology's global.user is %s: tiup-dm runs the cluster as one user; fix meta.yaml", m.User, m.Parsed.Global.User)
	}
	return m, nil
}

// decode returns the root node of meta.yaml's one document.
func decode(text string) (root *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			root, err = nil, domain.Errorf(domain.Invalid, "meta.yaml: the YAML could not be parsed")
		}
	}()
	dec := yaml.NewDecoder(strings.NewReader(text))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, domain.Errorf(domain.Invalid, "meta.yaml is empty: give the file tiup-dm keeps in ~/.tiup/storage/dm/clusters/<name>/meta.yaml")
	} else if err != nil {
		return nil, yamlErr(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, lineErr(next.Line, "only one YAML document is allowed")
	case !errors.Is(err, io.EOF):
		return nil, yamlErr(err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, domain.Errorf(domain.Invalid, "meta.yaml is empty")
	}
	return doc.Content[0], nil
}

// yamlParserProblems are the problems reported by yaml.v3's parser (as
// opposed to its scanner), whose line numbers it counts from 0 (as
// domain/topology.go knows them).
var yamlParserProblems = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected '-' indicator":    true,
	"did not find expected <document start>": true,
	"did not find expected <stream-start>":   true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"found duplicate %TAG directive":         true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found undefined tag handle":             true,
}

func yamlErr(err error) error {
	if m := yamlLineErrRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		if yamlParserProblems[m[2]] {
			n++
		}
		return lineErr(n, "invalid YAML: %s", m[2])
	}
	return domain.Errorf(domain.Invalid, "meta.yaml: invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
}

func lineErr(line int, format string, args ...any) error {
	return domain.Errorf(domain.Invalid, "meta.yaml line %d: "+format, append([]any{line}, args...)...)
}

func scalar(k, v *yaml.Node) (string, error) {
	if v.Kind != yaml.ScalarNode || v.ShortTag() == "!!null" {
		return "", lineErr(v.Line, "%s: want a string, got %s", k.Value, describe(v))
	}
	return v.Value, nil
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" || n.Value == "" {
			return "nothing"
		}
		return strconv.Quote(n.Value)
	case yaml.MappingNode:
		if len(n.Content) == 0 {
			return "an empty mapping"
		}
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	return "something else"
}

// topologyText cuts the topology section out of meta.yaml as it is
// written: its lines, de-indented, so that line numbers keep pointing into
// meta.yaml. The ignored sections become blank lines.
func topologyText(text string, root, key, node *yaml.Node) (string, int, []string, error) {
	if node.Style&yaml.FlowStyle != 0 || node.Line <= key.Line {
		return "", 0, nil, lineErr(key.Line, "topology: write it as a block mapping on the lines below topology:, as tiup-dm does")
	}
	lines := strings.Split(text, "\n")
	first := node.Line // first line of the section: its first key
	end := len(lines)  // the line after it: the next top-level key, or the end
	for i := 0; i < len(root.Content); i += 2 {
		if l := root.Content[i].Line; l > key.Line && l-1 < end {
			end = l - 1
		}
	}
	indent := node.Column - 1
	var ignored []string
	blank := map[int]bool{}
	keys := node.Content
	for i := 0; i+1 < len(keys); i += 2 {
		if !ignoredSections[keys[i].Value] {
			continue
		}
		ignored = append(ignored, keys[i].Value)
		stop := end
		if i+2 < len(keys) {
			stop = keys[i+2].Line - 1
		}
		for l := keys[i].Line; l <= stop; l++ {
			blank[l] = true
		}
	}
	out := make([]string, 0, end-first+1)
	for l := first; l <= end && l <= len(lines); l++ {
		line := strings.TrimRight(lines[l-1], "\r")
		trimmed := strings.TrimLeft(line, " ")
		switch {
		case blank[l] || trimmed == "" || strings.HasPrefix(trimmed, "#") && len(line)-len(trimmed) < indent:
			out = append(out, "")
		case len(line)-len(trimmed) < indent:
			return "", 0, nil, lineErr(l, "the topology's lines must be indented like its first key (%d spaces)", indent)
		case strings.Contains(line[:indent], "\t"):
			return "", 0, nil, lineErr(l, "tab in the indentation")
		default:
			out = append(out, line[indent:])
		}
	}
	return strings.Join(out, "\n") + "\n", first, ignored, nil
}

// topologyLineRE matches the location domain.ParseTopology puts first.
var topologyLineRE = regexp.MustCompile(`^topology line (\d+): `)

// relocate turns a topology error's line into meta.yaml's.
func relocate(err error, firstLine int) error {
	msg := domain.ErrorMessage(err)
	if m := topologyLineRE.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return domain.Errorf(domain.ErrorCode(err), "meta.yaml line %d: topology: %s", n+firstLine-1, msg[len(m[0]):])
	}
	return domain.Errorf(domain.ErrorCode(err), "meta.yaml: %s", strings.TrimPrefix(msg, "topology: "))
}

// String describes m without its topology, for logs.
func (m Meta) String() string {
	return fmt.Sprintf("tiup-dm cluster of %s, version %s, %d instances", m.User, m.Version, len(m.Parsed.Instances))
}
