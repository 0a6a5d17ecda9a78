package domain

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Role is the kind of an instance in a DM cluster, named as `tiup dm
// display` names it.
type Role string

// The roles of a DM cluster.
const (
	RoleMaster       Role = "dm-master"
	RoleWorker       Role = "dm-worker"
	RolePrometheus   Role = "prometheus"
	RoleGrafana      Role = "grafana"
	RoleAlertmanager Role = "alertmanager"
)

// Service managers (global.service_manager, a dmgr extension of the tiup-dm
// format): systemd units, or run scripts with pid files for hosts without
// systemd.
const (
	ServiceManagerSystemd = "systemd"
	ServiceManagerNone    = "none"
)

// Topology is a parsed and validated tiup-dm topology file: every default is
// filled in and every directory is absolute.
type Topology struct {
	Global        GlobalOptions             `json:"global"`
	ServerConfigs map[string]map[string]any `json:"server_configs,omitempty"` // "master", "worker" (and tiup's "grafana")
	Instances     []Instance                `json:"instances"`                // masters, then workers, prometheus, grafana, alertmanager, each in file order
}

// GlobalOptions are the `global` section of a topology with defaults filled
// in. DeployDir is absolute; DataDir and LogDir keep the form the user gave
// (relative ones are relative to each instance's deploy directory).
type GlobalOptions struct {
	User           string `json:"user"`
	SSHPort        int    `json:"ssh_port"`
	DeployDir      string `json:"deploy_dir"`
	DataDir        string `json:"data_dir"`
	LogDir         string `json:"log_dir"`
	Arch           string `json:"arch"`
	OS             string `json:"os"`
	ServiceManager string `json:"service_manager"`
}

// Instance is one server of a topology, with its directories resolved.
type Instance struct {
	ID        string         `json:"id"`   // "host:port" as `tiup dm display` shows it ("[::1]:8261" for IPv6)
	Name      string         `json:"name"` // masters/workers: `name`, default "dm-<host>-<port>"; other roles: "<role>-<host>-<port>"
	Role      Role           `json:"role"`
	Host      string         `json:"host"`
	SSHPort   int            `json:"ssh_port"`
	Port      int            `json:"port"`
	PeerPort  int            `json:"peer_port,omitempty"` // dm-master peer port; alertmanager cluster port
	DeployDir string         `json:"deploy_dir"`
	DataDir   string         `json:"data_dir"`
	LogDir    string         `json:"log_dir"`
	Config    map[string]any `json:"config,omitempty"`
	Arch      string         `json:"arch,omitempty"`   // the instance's `arch`, default global.arch
	OS        string         `json:"os,omitempty"`     // the instance's `os`, default global.os
	Line      int            `json:"line"`             // line of the instance in the topology text
	Status    string         `json:"status,omitempty"` // Instance* status in a cluster's state; empty in a parsed topology
	// Imported: the instance was taken over from tiup-dm (import.go). It
	// keeps tiup's layout (its binary in bin/<component>/<component>) and
	// its directories carry no marker of dmgr's.
	Imported bool `json:"imported,omitempty"`
}

// Ports returns the ports the instance listens on: Port, and PeerPort when
// set.
func (i Instance) Ports() []int {
	if i.PeerPort != 0 {
		return []int{i.Port, i.PeerPort}
	}
	return []int{i.Port}
}

// Dirs returns the instance's directories: DeployDir, DataDir and LogDir,
// without repeats or empty ones.
func (i Instance) Dirs() []string {
	var out []string
	for _, d := range []string{i.DeployDir, i.DataDir, i.LogDir} {
		if d != "" && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// label names the instance in messages: "dm-master 198.18.0.11:8261".
func (i Instance) label() string { return string(i.Role) + " " + i.ID }

// topoSection describes one `*_servers` section of the topology.
type topoSection struct {
	key      string // the top-level key
	role     Role
	portKey  string
	port     int
	peerKey  string // "" when the role has no second port
	peerPort int
	named    bool // the instance has a `name` (a DM member name)
}

// topoSections in the order Topology.Instances lists them.
var topoSections = []topoSection{
	{key: "master_servers", role: RoleMaster, portKey: "port", port: 8261, peerKey: "peer_port", peerPort: 8291, named: true},
	{key: "worker_servers", role: RoleWorker, portKey: "port", port: 8262, named: true},
	{key: "monitoring_servers", role: RolePrometheus, portKey: "port", port: 9090},
	{key: "grafana_servers", role: RoleGrafana, portKey: "port", port: 3000},
	{key: "alertmanager_servers", role: RoleAlertmanager, portKey: "web_port", port: 9093, peerKey: "cluster_port", peerPort: 9094},
}

var (
	// yaml.v3 syntax errors read "yaml: line N: problem".
	yamlLineErrRE   = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)
	yamlAnchorErrRE = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)
	memberNameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
)

const (
	// maxYAMLNodes bounds the YAML nodes visited, aliases counted each time they
	// are followed, so that an alias bomb is refused instead of expanded.
	maxYAMLNodes = 200000
	// maxYAMLDepth bounds the nesting of config values and merge keys.
	maxYAMLDepth = 64
	// msgNoMaster is the message for a topology without any dm-master.
	msgNoMaster = "topology needs at least one dm-master in master_servers"
)

// ParseTopology parses a tiup-dm topology file (the YAML given to `tiup dm
// deploy`), fills in defaults, resolves directories as tiup does and checks
// that instances of the topology do not clash with one another. Errors are
// *Error values with code Invalid whose message starts with "topology line N:"
// wherever a line is known.
func ParseTopology(text string) (*Topology, error) {
	if err := checkTopologyText(text); err != nil {
		return nil, err
	}
	root, err := decodeTopologyYAML(text)
	if err != nil {
		return nil, err
	}
	p := &topoParser{budget: maxYAMLNodes}
	return p.topology(root)
}

// parseTopologyFragment parses a scale-out topology: as ParseTopology, but
// it need not have a dm-master.
func parseTopologyFragment(text string) (*Topology, error) {
	if err := checkTopologyText(text); err != nil {
		return nil, err
	}
	root, err := decodeTopologyYAML(text)
	if err != nil {
		return nil, err
	}
	p := &topoParser{budget: maxYAMLNodes, fragment: true}
	return p.topology(root)
}

// checkTopologyText refuses what YAML cannot hold (invalid UTF-8, control
// characters) with a line number; yaml.v3 reports these without one.
func checkTopologyText(text string) error {
	line := 1
	for i, r := range text {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(text[i:], "\uFFFD"):
			return topologyErr(line, "the text is not valid UTF-8")
		case r == '\n':
			line++
		case r == '\t' || r == '\r' || r == 0x85:
		case r < 0x20 || (r >= 0x7f && r < 0xa0) || (r >= 0xd800 && r < 0xe000) || r == 0xfffe || r == 0xffff:
			return topologyErr(line, "control character %U is not allowed", r)
		}
	}
	return nil
}

// decodeTopologyYAML returns the root node of the only document of text, or nil
// when text holds no document.
func decodeTopologyYAML(text string) (root *yaml.Node, err error) {
	defer func() {
		// yaml.v3 is not expected to panic on any input; if it does, the
		// input is refused rather than taking the caller down.
		if r := recover(); r != nil {
			root, err = nil, Errorf(Invalid, "topology: the YAML could not be parsed")
		}
	}()
	dec := yaml.NewDecoder(strings.NewReader(text))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, yamlError(err, text)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, topologyErr(next.Line, "only one YAML document is allowed")
	case !errors.Is(err, io.EOF):
		return nil, yamlError(err, text)
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, nil
		}
		return doc.Content[0], nil
	}
	return &doc, nil
}

// yamlParserProblems are the problems reported by yaml.v3's parser (as
// opposed to its scanner), whose line numbers it counts from 0.
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

// yamlError re-words a yaml.v3 error as "topology line N: ...". yaml.v3
// leaves the line out when the problem is on the first line, and for an
// unknown anchor, whose first use is looked up in text.
func yamlError(err error, text string) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLineErrRE.FindStringSubmatch(err.Error()); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil {
			if yamlParserProblems[m[2]] {
				n++ // yaml.v3 counts lines of parser (not scanner) errors from 0
			}
			return topologyErr(n, "%s", m[2])
		}
	}
	if m := yamlAnchorErrRE.FindStringSubmatch(msg); m != nil {
		if i := strings.Index(text, "*"+m[1]); i >= 0 {
			return topologyErr(1+strings.Count(text[:i], "\n"), "alias *%s refers to an anchor &%s that is not defined before it", m[1], m[1])
		}
		return Errorf(Invalid, "topology: alias *%s refers to an anchor &%s that is not defined before it", m[1], m[1])
	}
	if strings.Contains(msg, "\n") || strings.HasPrefix(msg, "line ") {
		return Errorf(Invalid, "topology: invalid YAML: %s", msg)
	}
	return topologyErr(1, "%s", msg)
}

// topologyErr returns an Invalid error located at a line of the topology.
func topologyErr(line int, format string, args ...any) *Error {
	return Errorf(Invalid, "topology line %d: "+format, append([]any{line}, args...)...)
}

// topoParser walks the YAML node tree. It keeps a budget of nodes so that
// aliases cannot make the walk explode.
type topoParser struct {
	budget int
	// fragment: a scale-out topology, which may have no dm-master.
	fragment bool
	// globalDirLines are the lines of the global deploy_dir, data_dir and
	// log_dir, when the topology sets them: an instance directory made
	// from one of them is refused at that line.
	globalDirLines map[string]int
}

// yamlEntry is one entry of a YAML mapping.
type yamlEntry struct {
	key  string
	k, v *yaml.Node
}

func (p *topoParser) topology(root *yaml.Node) (*Topology, error) {
	if root == nil {
		return nil, Errorf(Invalid, msgNoMaster)
	}
	root, err := p.deref(root)
	if err != nil {
		return nil, err
	}
	if isNullNode(root) {
		return nil, Errorf(Invalid, msgNoMaster)
	}
	if root.Kind != yaml.MappingNode {
		return nil, topologyErr(root.Line, "want a mapping with keys such as global and master_servers, got %s", describeNode(root))
	}
	entries, err := p.mapping(root, "", 0)
	if err != nil {
		return nil, err
	}
	var globalNode, configsNode *yaml.Node
	sections := map[string]*yaml.Node{}
	for _, e := range entries {
		switch e.key {
		case "global":
			globalNode = e.v
		case "server_configs":
			configsNode = e.v
		case "master_servers", "worker_servers", "monitoring_servers", "grafana_servers", "alertmanager_servers":
			sections[e.key] = e.v
		case "monitored":
			return nil, topologyErr(e.k.Line, `key "monitored" is not supported: dmgr does not deploy node_exporter or blackbox_exporter; remove the section`)
		default:
			return nil, topologyErr(e.k.Line, "unknown key %q%s", e.key, suggestTopLevelKey(e.key))
		}
	}

	t := &Topology{}
	if t.Global, err = p.global(globalNode); err != nil {
		return nil, err
	}
	if t.ServerConfigs, err = p.serverConfigs(configsNode); err != nil {
		return nil, err
	}
	for _, rs := range topoSections {
		insts, err := p.instances(rs, sections[rs.key], t.Global)
		if err != nil {
			return nil, err
		}
		t.Instances = append(t.Instances, insts...)
	}
	if !p.fragment && (len(t.Instances) == 0 || t.Instances[0].Role != RoleMaster) {
		return nil, Errorf(Invalid, msgNoMaster)
	}
	if err := checkTopologyClashes(t.Instances); err != nil {
		return nil, err
	}
	return t, nil
}

// topologyKeys are the keys a topology may have, for suggestions.
var topologyKeys = []string{"global", "server_configs", "master_servers", "worker_servers", "monitoring_servers", "grafana_servers", "alertmanager_servers"}

// suggestTopLevelKey returns `; did you mean "x"?` for a near miss of a top-level key.
func suggestTopLevelKey(key string) string {
	if len(key) > 64 {
		return ""
	}
	for _, k := range topologyKeys {
		if levenshtein(strings.ToLower(key), k) <= 2 {
			return fmt.Sprintf("; did you mean %q?", k)
		}
	}
	return ""
}

// levenshtein is the Levenshtein distance of two short strings.
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (p *topoParser) global(n *yaml.Node) (GlobalOptions, error) {
	g := GlobalOptions{
		User:           "tidb",
		SSHPort:        22,
		DeployDir:      "deploy",
		DataDir:        "data",
		LogDir:         "log",
		Arch:           "amd64",
		OS:             "linux",
		ServiceManager: ServiceManagerSystemd,
	}
	entries, err := p.section(n, "global")
	if err != nil {
		return g, err
	}
	f := yamlFieldsOf(entries)
	if err := p.stringField(f, "global", "user", &g.User); err != nil {
		return g, err
	}
	if err := p.intField(f, "global", "ssh_port", &g.SSHPort); err != nil {
		return g, err
	}
	for _, d := range []struct {
		key string
		dst *string
	}{{"deploy_dir", &g.DeployDir}, {"data_dir", &g.DataDir}, {"log_dir", &g.LogDir}} {
		if err := p.stringField(f, "global", d.key, d.dst); err != nil {
			return g, err
		}
	}
	for _, d := range []struct {
		key string
		dst *string
	}{{"arch", &g.Arch}, {"os", &g.OS}, {"service_manager", &g.ServiceManager}} {
		if err := p.stringField(f, "global", d.key, d.dst); err != nil {
			return g, err
		}
	}

	if err := ValidateUser(g.User); err != nil {
		return g, topologyErr(f.line("user", n), "global.user: %s", ErrorMessage(err))
	}
	if err := ValidatePort(g.SSHPort); err != nil {
		return g, topologyErr(f.line("ssh_port", n), "global.ssh_port: %s", ErrorMessage(err))
	}
	for _, d := range []struct {
		key string
		dir string
	}{{"deploy_dir", g.DeployDir}, {"data_dir", g.DataDir}, {"log_dir", g.LogDir}} {
		if reason := topologyDirProblem(d.dir); reason != "" {
			return g, topologyErr(f.line(d.key, n), "global.%s: path %q is invalid: %s", d.key, d.dir, reason)
		}
		if path.IsAbs(d.dir) {
			if reason := baseDirProblem(d.dir); reason != "" {
				return g, topologyErr(f.line(d.key, n), "global.%s: %s; choose a base directory of dmgr's own (e.g. /srv/dm, or a path relative to the deploy user's home)", d.key, reason)
			}
		}
		if _, ok := f[d.key]; ok {
			if p.globalDirLines == nil {
				p.globalDirLines = map[string]int{}
			}
			p.globalDirLines[d.key] = f.line(d.key, n)
		}
	}
	if !path.IsAbs(g.DeployDir) {
		g.DeployDir = path.Join(userHome(g.User), g.DeployDir)
	}
	if g.Arch, err = normalizeArch(g.Arch); err != nil {
		return g, topologyErr(f.line("arch", n), "global.arch: %s", ErrorMessage(err))
	}
	if g.OS, err = normalizeOS(g.OS); err != nil {
		return g, topologyErr(f.line("os", n), "global.os: %s", ErrorMessage(err))
	}
	if g.ServiceManager != ServiceManagerSystemd && g.ServiceManager != ServiceManagerNone {
		return g, topologyErr(f.line("service_manager", n), "global.service_manager: %q is not supported: use %s or %s", g.ServiceManager, ServiceManagerSystemd, ServiceManagerNone)
	}
	return g, nil
}

func userHome(user string) string { return "/home/" + user }

// topologyDirProblem checks a directory as written in the topology: an absolute
// path, or a relative one that will be joined to a base directory.
func topologyDirProblem(d string) string {
	if path.IsAbs(d) {
		return remotePathProblem(d)
	}
	return relPathProblem(d)
}

func normalizeArch(a string) (string, error) {
	switch strings.ToLower(a) {
	case "amd64", "x86_64":
		return "amd64", nil
	case "arm64", "aarch64":
		return "arm64", nil
	}
	return "", Errorf(Invalid, "arch %q is not supported: use amd64 or arm64", a)
}

func normalizeOS(o string) (string, error) {
	if strings.ToLower(o) == "linux" {
		return "linux", nil
	}
	return "", Errorf(Invalid, "os %q is not supported: use linux", o)
}

func (p *topoParser) serverConfigs(n *yaml.Node) (map[string]map[string]any, error) {
	entries, err := p.section(n, "server_configs")
	if err != nil || len(entries) == 0 {
		return nil, err
	}
	out := map[string]map[string]any{}
	for _, e := range entries {
		switch e.key {
		case "master", "worker", "grafana":
		default:
			return nil, topologyErr(e.k.Line, "server_configs: unknown key %q: use master or worker", e.key)
		}
		m, err := p.configMap(e.v, "server_configs."+e.key)
		if err != nil {
			return nil, err
		}
		if m != nil {
			out[e.key] = m
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// section returns the entries of an optional mapping (nil or null: none).
func (p *topoParser) section(n *yaml.Node, where string) ([]yamlEntry, error) {
	if n == nil {
		return nil, nil
	}
	d, err := p.deref(n)
	if err != nil {
		return nil, err
	}
	if isNullNode(d) {
		return nil, nil
	}
	if d.Kind != yaml.MappingNode {
		return nil, topologyErr(n.Line, "%s: want a mapping, got %s", where, describeNode(d))
	}
	return p.mapping(d, where, 0)
}

// configMap converts an optional mapping of arbitrary configuration.
func (p *topoParser) configMap(n *yaml.Node, where string) (map[string]any, error) {
	d, err := p.deref(n)
	if err != nil {
		return nil, err
	}
	if isNullNode(d) {
		return nil, nil
	}
	if d.Kind != yaml.MappingNode {
		return nil, topologyErr(n.Line, "%s: want a mapping, got %s", where, describeNode(d))
	}
	v, err := p.value(n, where, 0)
	if err != nil {
		return nil, err
	}
	return v.(map[string]any), nil
}

// value converts a node into plain Go values: map[string]any, []any,
// string, int, uint64, float64 (finite), bool or nil, so that the result
// encodes as JSON.
func (p *topoParser) value(n *yaml.Node, where string, depth int) (any, error) {
	if depth > maxYAMLDepth {
		return nil, topologyErr(n.Line, "%s: nested too deeply", where)
	}
	if err := p.spend(n); err != nil {
		return nil, err
	}
	d, err := p.deref(n)
	if err != nil {
		return nil, err
	}
	switch d.Kind {
	case yaml.ScalarNode:
		switch d.ShortTag() {
		case "!!null":
			return nil, nil
		case "!!str", "!!timestamp", "!!binary", "!!merge":
			return d.Value, nil
		case "!!float":
			var f float64
			if err := d.Decode(&f); err != nil {
				return nil, topologyErr(n.Line, "%s: want a number, got %s", where, describeNode(d))
			}
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, topologyErr(n.Line, "%s: %s is not a finite number", where, d.Value)
			}
			return f, nil
		case "!!int", "!!bool":
			var v any
			if err := d.Decode(&v); err != nil {
				return nil, topologyErr(n.Line, "%s: %s", where, strings.TrimPrefix(err.Error(), "yaml: "))
			}
			if f, ok := v.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
				return nil, topologyErr(n.Line, "%s: %s is not a finite number", where, d.Value)
			}
			return v, nil
		default: // a local tag such as !secret: keep the text
			return d.Value, nil
		}
	case yaml.MappingNode:
		entries, err := p.mapping(d, where, depth)
		if err != nil {
			return nil, err
		}
		m := make(map[string]any, len(entries))
		for _, e := range entries {
			v, err := p.value(e.v, where+"."+e.key, depth+1)
			if err != nil {
				return nil, err
			}
			m[e.key] = v
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, 0, len(d.Content))
		for i, c := range d.Content {
			v, err := p.value(c, fmt.Sprintf("%s[%d]", where, i), depth+1)
			if err != nil {
				return nil, err
			}
			s = append(s, v)
		}
		return s, nil
	}
	return nil, topologyErr(n.Line, "%s: unexpected YAML content", where)
}

// spend takes one node from the budget.
func (p *topoParser) spend(n *yaml.Node) error {
	p.budget--
	if p.budget < 0 {
		return topologyErr(n.Line, "the topology is too large, or its aliases expand too far")
	}
	return nil
}

// deref follows aliases.
func (p *topoParser) deref(n *yaml.Node) (*yaml.Node, error) {
	for i := 0; n.Kind == yaml.AliasNode; i++ {
		if n.Alias == nil || i > maxYAMLDepth {
			return nil, topologyErr(n.Line, "alias *%s cannot be resolved", n.Value)
		}
		if err := p.spend(n); err != nil {
			return nil, err
		}
		n = n.Alias
	}
	return n, nil
}

// mapping returns the entries of the mapping node n (already dereferenced)
// in file order. Repeated keys are refused; merge keys (<<) are expanded,
// explicit keys taking precedence over merged ones.
func (p *topoParser) mapping(n *yaml.Node, where string, depth int) ([]yamlEntry, error) {
	if depth > maxYAMLDepth {
		return nil, topologyErr(n.Line, "%snested too deeply", wherePrefix(where))
	}
	var out, merged []yamlEntry
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if err := p.spend(n.Content[i]); err != nil {
			return nil, err
		}
		k, err := p.deref(n.Content[i])
		if err != nil {
			return nil, err
		}
		v := n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, topologyErr(n.Content[i].Line, "%swant a key name, got %s", wherePrefix(where), describeNode(k))
		}
		if k.ShortTag() == "!!merge" {
			m, err := p.merge(v, where, depth)
			if err != nil {
				return nil, err
			}
			merged = append(merged, m...)
			continue
		}
		if first, dup := seen[k.Value]; dup {
			return nil, topologyErr(n.Content[i].Line, "%skey %q is repeated (first at line %d)", wherePrefix(where), k.Value, first)
		}
		seen[k.Value] = n.Content[i].Line
		out = append(out, yamlEntry{key: k.Value, k: n.Content[i], v: v})
	}
	for _, e := range merged {
		if _, ok := seen[e.key]; !ok {
			seen[e.key] = e.k.Line
			out = append(out, e)
		}
	}
	return out, nil
}

// merge expands the value of a merge key: a mapping or a list of mappings.
func (p *topoParser) merge(v *yaml.Node, where string, depth int) ([]yamlEntry, error) {
	d, err := p.deref(v)
	if err != nil {
		return nil, err
	}
	var srcs []*yaml.Node
	switch d.Kind {
	case yaml.MappingNode:
		srcs = []*yaml.Node{d}
	case yaml.SequenceNode:
		for _, c := range d.Content {
			cd, err := p.deref(c)
			if err != nil {
				return nil, err
			}
			if cd.Kind != yaml.MappingNode {
				return nil, topologyErr(c.Line, "%s<< wants a mapping or a list of mappings, got %s", wherePrefix(where), describeNode(cd))
			}
			srcs = append(srcs, cd)
		}
	default:
		return nil, topologyErr(v.Line, "%s<< wants a mapping or a list of mappings, got %s", wherePrefix(where), describeNode(d))
	}
	var out []yamlEntry
	for _, s := range srcs {
		m, err := p.mapping(s, where, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, m...)
	}
	return out, nil
}

// wherePrefix prefixes a message with where it applies ("" for the top level).
func wherePrefix(where string) string {
	if where == "" {
		return ""
	}
	return where + ": "
}

// yamlFields indexes the entries of a mapping by key.
type yamlFields map[string]yamlEntry

func yamlFieldsOf(entries []yamlEntry) yamlFields {
	f := make(yamlFields, len(entries))
	for _, e := range entries {
		f[e.key] = e
	}
	return f
}

// line is the line of key's value, or of the mapping n when key is absent.
func (f yamlFields) line(key string, n *yaml.Node) int {
	if e, ok := f[key]; ok {
		return e.v.Line
	}
	if n != nil {
		return n.Line
	}
	return 1
}

// stringField sets *dst to the value of key when it is present and not
// null. Any scalar is accepted as text (as tiup's decoding does).
func (p *topoParser) stringField(f yamlFields, where, key string, dst *string) error {
	e, ok := f[key]
	if !ok {
		return nil
	}
	d, err := p.deref(e.v)
	if err != nil {
		return err
	}
	if isNullNode(d) {
		return nil
	}
	if d.Kind != yaml.ScalarNode {
		return topologyErr(e.v.Line, "%s.%s: want a string, got %s", where, key, describeNode(d))
	}
	if d.Value != "" {
		*dst = d.Value
	}
	return nil
}

// intField sets *dst to the value of key when it is present and not null.
func (p *topoParser) intField(f yamlFields, where, key string, dst *int) error {
	e, ok := f[key]
	if !ok {
		return nil
	}
	d, err := p.deref(e.v)
	if err != nil {
		return err
	}
	if isNullNode(d) {
		return nil
	}
	if d.Kind == yaml.ScalarNode && d.ShortTag() == "!!int" {
		var i int
		if err := d.Decode(&i); err == nil {
			*dst = i
			return nil
		}
	}
	return topologyErr(e.v.Line, "%s.%s: want a number, got %s", where, key, describeNode(d))
}

func isNullNode(n *yaml.Node) bool {
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// describeNode names what a node holds, for "want ..., got ..." messages.
func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "nothing"
		}
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		return strconv.Quote(v)
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return "something else"
}

// instances parses one `*_servers` section.
func (p *topoParser) instances(rs topoSection, n *yaml.Node, g GlobalOptions) ([]Instance, error) {
	if n == nil {
		return nil, nil
	}
	d, err := p.deref(n)
	if err != nil {
		return nil, err
	}
	if isNullNode(d) {
		return nil, nil
	}
	if d.Kind != yaml.SequenceNode {
		return nil, topologyErr(n.Line, "%s: want a list of instances, got %s", rs.key, describeNode(d))
	}
	var out []Instance
	for i, c := range d.Content {
		if err := p.spend(c); err != nil {
			return nil, err
		}
		inst, err := p.instance(rs, fmt.Sprintf("%s[%d]", rs.key, i), c, g)
		if err != nil {
			return nil, err
		}
		out = append(out, inst)
	}
	return out, nil
}

// instance parses one server of a section and resolves its defaults and
// directories. Keys of tiup that dmgr does not use (numa_node,
// resource_control, storage_retention, source, ...) are ignored.
func (p *topoParser) instance(rs topoSection, where string, n *yaml.Node, g GlobalOptions) (Instance, error) {
	d, err := p.deref(n)
	if err != nil {
		return Instance{}, err
	}
	if d.Kind != yaml.MappingNode {
		return Instance{}, topologyErr(n.Line, "%s: want a mapping with at least a host, got %s", where, describeNode(d))
	}
	entries, err := p.mapping(d, where, 0)
	if err != nil {
		return Instance{}, err
	}
	f := yamlFieldsOf(entries)
	inst := Instance{
		Role:    rs.role,
		SSHPort: g.SSHPort,
		Port:    rs.port,
		Arch:    g.Arch,
		OS:      g.OS,
		Line:    n.Line,
	}
	var name, deploy, data, logd string
	var peer = rs.peerPort
	for _, s := range []struct {
		key string
		dst *string
	}{{"host", &inst.Host}, {"deploy_dir", &deploy}, {"data_dir", &data}, {"log_dir", &logd}, {"arch", &inst.Arch}, {"os", &inst.OS}} {
		if err := p.stringField(f, where, s.key, s.dst); err != nil {
			return Instance{}, err
		}
	}
	if rs.named {
		if err := p.stringField(f, where, "name", &name); err != nil {
			return Instance{}, err
		}
	}
	if err := p.intField(f, where, "ssh_port", &inst.SSHPort); err != nil {
		return Instance{}, err
	}
	if err := p.intField(f, where, rs.portKey, &inst.Port); err != nil {
		return Instance{}, err
	}
	if rs.peerKey != "" {
		if err := p.intField(f, where, rs.peerKey, &peer); err != nil {
			return Instance{}, err
		}
	}
	if e, ok := f["config"]; ok {
		if inst.Config, err = p.configMap(e.v, where+".config"); err != nil {
			return Instance{}, err
		}
	}

	if inst.Host == "" {
		return Instance{}, topologyErr(n.Line, "%s: host is required", where)
	}
	if err := ValidateHost(inst.Host); err != nil {
		return Instance{}, topologyErr(f.line("host", n), "%s.host: %s", where, ErrorMessage(err))
	}
	for _, pt := range []struct {
		key  string
		port int
	}{{"ssh_port", inst.SSHPort}, {rs.portKey, inst.Port}, {rs.peerKey, peer}} {
		if pt.key == "" {
			continue
		}
		if err := ValidatePort(pt.port); err != nil {
			return Instance{}, topologyErr(f.line(pt.key, n), "%s.%s: %s", where, pt.key, ErrorMessage(err))
		}
	}
	inst.PeerPort = peer
	if inst.Arch, err = normalizeArch(inst.Arch); err != nil {
		return Instance{}, topologyErr(f.line("arch", n), "%s.arch: %s", where, ErrorMessage(err))
	}
	if inst.OS, err = normalizeOS(inst.OS); err != nil {
		return Instance{}, topologyErr(f.line("os", n), "%s.os: %s", where, ErrorMessage(err))
	}

	port := strconv.Itoa(inst.Port)
	inst.ID = net.JoinHostPort(inst.Host, port)
	switch {
	case !rs.named:
		inst.Name = string(rs.role) + "-" + inst.Host + "-" + port
	case name == "":
		inst.Name = "dm-" + inst.Host + "-" + port
	case !memberNameRE.MatchString(name):
		return Instance{}, topologyErr(f.line("name", n), "%s.name: name %q is invalid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", where, name)
	default:
		inst.Name = name
	}

	// Directories, as tiup resolves them.
	for _, dd := range []struct{ key, dir string }{{"deploy_dir", deploy}, {"data_dir", data}, {"log_dir", logd}} {
		if dd.dir == "" {
			continue
		}
		if reason := topologyDirProblem(dd.dir); reason != "" {
			return Instance{}, topologyErr(f.line(dd.key, n), "%s.%s: path %q is invalid: %s", where, dd.key, dd.dir, reason)
		}
	}
	sub := string(rs.role) + "-" + port
	switch {
	case deploy == "":
		inst.DeployDir = path.Join(g.DeployDir, sub)
	case path.IsAbs(deploy):
		inst.DeployDir = deploy
	default:
		inst.DeployDir = path.Join(userHome(g.User), deploy)
	}
	inst.DataDir = resolveInstanceDir(data, g.DataDir, inst.DeployDir, sub)
	inst.LogDir = resolveInstanceDir(logd, g.LogDir, inst.DeployDir, sub)
	for _, dd := range []struct{ key, dir string }{{"deploy_dir", inst.DeployDir}, {"data_dir", inst.DataDir}, {"log_dir", inst.LogDir}} {
		line, what := f.line(dd.key, n), where+"."+dd.key
		if own := f[dd.key]; own.v == nil || isNullNode(own.v) {
			// Made from the global setting (the deploy directory's, for a
			// data or log directory inside it).
			key := dd.key
			if !path.IsAbs(g.DataDir) && key == "data_dir" || !path.IsAbs(g.LogDir) && key == "log_dir" {
				key = "deploy_dir"
			}
			if gl := p.globalDirLines[key]; gl != 0 && f[key].v == nil {
				line, what = gl, fmt.Sprintf("global.%s, for %s.%s", key, where, dd.key)
			}
		}
		if reason := remotePathProblem(dd.dir); reason != "" {
			return Instance{}, topologyErr(line, "%s: path %q is invalid: %s", what, dd.dir, reason)
		}
		if reason := ownedDirProblem(dd.dir, g.User); reason != "" {
			return Instance{}, topologyErr(line, "%s: %s; %s", what, reason, ownedDirAdvice)
		}
	}
	return inst, nil
}

// resolveInstanceDir resolves an instance's data or log directory: the instance's
// own value (absolute, or relative to its deploy directory), else the global
// one (absolute: a <component>-<port> directory inside it; relative: inside
// the deploy directory).
func resolveInstanceDir(own, global, deployDir, sub string) string {
	switch {
	case own == "" && path.IsAbs(global):
		return path.Join(global, sub)
	case own == "":
		return path.Join(deployDir, global)
	case path.IsAbs(own):
		return own
	default:
		return path.Join(deployDir, own)
	}
}

// checkTopologyClashes refuses instances of one topology that share a name, a port
// on a host or a directory on a host, or that disagree on a host's platform.
// Each instance is checked against the ones before it, so the error names
// the later instance's line first, and the earliest instance it clashes
// with. Names and ports are kept in maps and directories in a dirIndex per
// host, so a topology of n instances costs O(n · depth), not O(n²).
func checkTopologyClashes(insts []Instance) error {
	names := make(map[string]int, len(insts))
	ports := make(map[hostPortKey]int, len(insts))
	firstOnHost := map[string]int{} // host key → index of its first instance
	dirs := map[string]*dirIndex{}  // host key → the directories of the instances checked so far
	for i, in := range insts {
		if in.Role == RoleMaster || in.Role == RoleWorker {
			if j, ok := names[in.Name]; ok {
				o := insts[j]
				return topologyErr(in.Line, "name %q is already used by %s (line %d)", in.Name, o.label(), o.Line)
			}
			names[in.Name] = i
		}
		hk := canonicalHost(in.Host)
		if in.PeerPort == in.Port {
			return topologyErr(in.Line, "%s uses port %d twice", in.label(), in.Port)
		}
		for _, port := range in.Ports() {
			if j, ok := ports[hostPortKey{hk, port}]; ok {
				o := insts[j]
				return topologyErr(in.Line, "port %d on %s is already used by %s (line %d)", port, in.Host, o.label(), o.Line)
			}
			ports[hostPortKey{hk, port}] = i
		}
		x := dirs[hk]
		if j, ok := firstOnHost[hk]; ok {
			// Every instance before this one on the host agrees with the
			// first one, so the first one is the earliest that disagrees.
			if o := insts[j]; o.Arch != in.Arch || o.OS != in.OS {
				return topologyErr(in.Line, "%s is %s/%s but %s (line %d) on the same host is %s/%s", in.label(), in.OS, in.Arch, o.label(), o.Line, o.OS, o.Arch)
			}
			j, clash := -1, false
			for _, d := range in.Dirs() {
				if o, ok := x.clash(d); ok && (!clash || o < j) {
					j, clash = o, true
				}
			}
			if clash {
				o := insts[j]
				d, od, _ := firstDirClash(in.Dirs(), o.Dirs())
				return topologyErr(in.Line, "directory %s on %s %s (line %d)", d, in.Host, describeDirClash(d, od, o), o.Line)
			}
		} else {
			firstOnHost[hk] = i
			x = newDirIndex()
			dirs[hk] = x
		}
		for _, d := range in.Dirs() {
			x.add(d, i)
		}
	}
	return nil
}

// firstDirClash returns the first directory of mine that is equal to, inside
// or contains one of theirs, and that one.
func firstDirClash(mine, theirs []string) (string, string, bool) {
	for _, d := range mine {
		for _, od := range theirs {
			if d == od || dirIsUnder(d, od) || dirIsUnder(od, d) {
				return d, od, true
			}
		}
	}
	return "", "", false
}

// describeDirClash says how directory d relates to od of instance o.
func describeDirClash(d, od string, o Instance) string {
	switch {
	case d == od:
		return "is also used by " + o.label()
	case dirIsUnder(d, od):
		return fmt.Sprintf("is inside directory %s of %s", od, o.label())
	default:
		return fmt.Sprintf("contains directory %s of %s", od, o.label())
	}
}

// dirIsUnder reports whether directory d is strictly inside directory parent.
// Both are clean absolute paths.
func dirIsUnder(d, parent string) bool {
	if parent == "/" {
		return d != "/"
	}
	return strings.HasPrefix(d, parent+"/")
}

// canonicalHost is the form of a host used to compare hosts: the canonical text
// of an IP address, or the lower-cased host name.
func canonicalHost(h string) string {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap().String()
	}
	return strings.ToLower(h)
}
