package dmsim

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// MasterConfig is the configuration of a simulated dm-master. Field names
// follow DM's config keys and flags.
type MasterConfig struct {
	ConfigFile        string
	Name              string
	MasterAddr        string // host:port to listen on; ":8261" means all interfaces
	AdvertiseAddr     string // client address announced to peers and workers
	PeerURLs          string // comma-separated URLs to listen on for peers
	AdvertisePeerURLs string
	InitialCluster    string // name=url,name=url
	Join              string // comma-separated client addresses of running masters
	DataDir           string
	LogFile           string
	OpenAPI           bool
	StartDelay        time.Duration // simulator only: see StartDelayKey
	FailStarts        int           // simulator only: see FailStartsKey
	PrintVersion      bool          // -V
	Version           string        // reported version; empty means CurrentVersion()
	Ignored           []string      // unknown flags, logged at start
}

// WorkerConfig is the configuration of a simulated dm-worker.
type WorkerConfig struct {
	ConfigFile    string
	Name          string
	WorkerAddr    string
	AdvertiseAddr string
	Join          string // comma-separated master addresses
	DataDir       string // simulator extension; defaults to the log file's directory
	LogFile       string
	StartDelay    time.Duration // simulator only: see StartDelayKey
	PrintVersion  bool
	Version       string
	Ignored       []string
}

// StartDelayKey is a top-level config file key that only the simulator
// knows (real DM refuses unknown keys, so keep it to test packages):
//
//	sim-start-delay = "3s"
//
// makes dm-master or dm-worker wait that long after writing its start
// marker and before it listens, so that a test can catch a deploy or start
// step in the middle of waiting for the instance to become healthy. The
// environment variable StartDelayEnv sets it when the config file does not.
const (
	StartDelayKey = "sim-start-delay"
	StartDelayEnv = "DMSIM_START_DELAY"
)

// FailStartsKey is a top-level dm-master config file key that only the
// simulator knows:
//
//	sim-fail-starts = 1
//
// makes the first N starts of the master (counted by its start markers in
// the data directory) exit with an error before listening, as a real
// dm-master does when the etcd of the cluster it joins refuses the new
// member ("etcdserver: unhealthy cluster", moments after the cluster
// formed): a test of what runs the instance again.
const FailStartsKey = "sim-fail-starts"

// startDelayFromEnv reads StartDelayEnv.
func startDelayFromEnv() (time.Duration, error) {
	v := os.Getenv(StartDelayEnv)
	if v == "" {
		return 0, nil
	}
	d, err := parseStartDelay(v)
	if err != nil {
		return 0, fmt.Errorf("environment %s: %w", StartDelayEnv, err)
	}
	return d, nil
}

func parseStartDelay(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s: want a duration like \"3s\", got %q", StartDelayKey, v)
	}
	return d, nil
}

var masterValueFlags = map[string]bool{"config": true, "name": true, "master-addr": true, "advertise-addr": true,
	"peer-urls": true, "advertise-peer-urls": true, "initial-cluster": true, "join": true, "data-dir": true, "log-file": true}

var workerValueFlags = map[string]bool{"config": true, "name": true, "worker-addr": true, "advertise-addr": true,
	"join": true, "log-file": true, "data-dir": true}

// ParseMasterFlags parses dm-master's command line. Values from --config are
// read first and flags override them. Unknown flags are collected in Ignored.
func ParseMasterFlags(args []string) (MasterConfig, error) {
	var c MasterConfig
	var err error
	if c.StartDelay, err = startDelayFromEnv(); err != nil {
		return c, err
	}
	p, err := applyArgs(args, masterValueFlags, c.set)
	c.Ignored, c.PrintVersion, c.ConfigFile = p.ignored, p.printVersion, p.configFile
	if err != nil || c.PrintVersion {
		return c, err
	}
	return c.normalize()
}

// parsedArgs is what both programs' command lines share.
type parsedArgs struct {
	ignored      []string
	printVersion bool
	configFile   string
}

// applyArgs parses args, then feeds set the values of --config's file
// first and the flags after them, so that flags override the file.
func applyArgs(args []string, valueFlags map[string]bool, set func(key, val string) error) (parsedArgs, error) {
	vals, order, ignored, err := parseArgs(args, valueFlags)
	if err != nil {
		return parsedArgs{}, err
	}
	p := parsedArgs{ignored: ignored, printVersion: vals["V"] == "true", configFile: vals["config"]}
	if p.configFile != "" {
		kv, err := readTOMLFile(p.configFile)
		if err != nil {
			return p, err
		}
		for _, k := range sortedKeys(kv) {
			if err := set(k, kv[k]); err != nil {
				return p, fmt.Errorf("config file %s: %w", p.configFile, err)
			}
		}
	}
	for _, k := range order {
		if err := set(k, vals[k]); err != nil {
			return p, fmt.Errorf("flag --%s: %w", k, err)
		}
	}
	return p, nil
}

func (c *MasterConfig) set(key, val string) error {
	switch key {
	case "name":
		c.Name = val
	case "master-addr":
		c.MasterAddr = val
	case "advertise-addr":
		c.AdvertiseAddr = val
	case "peer-urls":
		c.PeerURLs = val
	case "advertise-peer-urls":
		c.AdvertisePeerURLs = val
	case "initial-cluster":
		c.InitialCluster = val
	case "join":
		c.Join = val
	case "data-dir":
		c.DataDir = val
	case "log-file":
		c.LogFile = val
	case "openapi":
		b, err := strconv.ParseBool(val)
		if err != nil {
			return fmt.Errorf("openapi: want true or false, got %q", val)
		}
		c.OpenAPI = b
	case StartDelayKey:
		d, err := parseStartDelay(val)
		if err != nil {
			return err
		}
		c.StartDelay = d
	case FailStartsKey:
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 {
			return fmt.Errorf("%s: want a count like 1, got %q", FailStartsKey, val)
		}
		c.FailStarts = n
	}
	return nil
}

// normalize fills DM's defaults and validates addresses.
func (c MasterConfig) normalize() (MasterConfig, error) {
	if c.Name == "" {
		c.Name = "dm-master"
	}
	if c.MasterAddr == "" {
		c.MasterAddr = ":8261"
	}
	if _, _, err := net.SplitHostPort(c.MasterAddr); err != nil {
		return c, fmt.Errorf("master-addr %q: want host:port: %w", c.MasterAddr, err)
	}
	if c.AdvertiseAddr == "" {
		c.AdvertiseAddr = advertiseFrom(c.MasterAddr)
	}
	if c.PeerURLs == "" {
		c.PeerURLs = "http://127.0.0.1:8291"
	}
	for _, u := range splitList(c.PeerURLs) {
		if _, err := hostOfURL(u); err != nil {
			return c, fmt.Errorf("peer-urls: %w", err)
		}
	}
	if c.AdvertisePeerURLs == "" {
		c.AdvertisePeerURLs = c.PeerURLs
	}
	if c.InitialCluster == "" && c.Join == "" {
		c.InitialCluster = c.Name + "=" + c.AdvertisePeerURLs
	}
	if _, err := parseInitialCluster(c.InitialCluster); err != nil {
		return c, err
	}
	return c, nil
}

// ParseWorkerFlags parses dm-worker's command line like ParseMasterFlags.
func ParseWorkerFlags(args []string) (WorkerConfig, error) {
	var c WorkerConfig
	var err error
	if c.StartDelay, err = startDelayFromEnv(); err != nil {
		return c, err
	}
	p, err := applyArgs(args, workerValueFlags, c.set)
	c.Ignored, c.PrintVersion, c.ConfigFile = p.ignored, p.printVersion, p.configFile
	if err != nil || c.PrintVersion {
		return c, err
	}
	return c.normalize()
}

func (c *WorkerConfig) set(key, val string) error {
	switch key {
	case "name":
		c.Name = val
	case "worker-addr":
		c.WorkerAddr = val
	case "advertise-addr":
		c.AdvertiseAddr = val
	case "join":
		c.Join = val
	case "log-file":
		c.LogFile = val
	case "data-dir":
		c.DataDir = val
	case StartDelayKey:
		d, err := parseStartDelay(val)
		if err != nil {
			return err
		}
		c.StartDelay = d
	}
	return nil
}

func (c WorkerConfig) normalize() (WorkerConfig, error) {
	if c.Name == "" {
		c.Name = "dm-worker"
	}
	if c.WorkerAddr == "" {
		c.WorkerAddr = ":8262"
	}
	if _, _, err := net.SplitHostPort(c.WorkerAddr); err != nil {
		return c, fmt.Errorf("worker-addr %q: want host:port: %w", c.WorkerAddr, err)
	}
	if c.AdvertiseAddr == "" {
		c.AdvertiseAddr = advertiseFrom(c.WorkerAddr)
	}
	if c.Join == "" {
		return c, fmt.Errorf("dm-worker %s: --join (dm-master addresses) is required", c.Name)
	}
	return c, nil
}

// advertiseFrom turns a listen address into an address others can dial.
func advertiseFrom(listen string) string {
	host, port, _ := net.SplitHostPort(listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// parseArgs accepts -f v, --f v, -f=v, --f=v. -V/--version is boolean.
// Unknown flags are returned in ignored; without "=" they take the next
// argument as value unless it starts with "-".
func parseArgs(args []string, valueFlags map[string]bool) (vals map[string]string, order, ignored []string, err error) {
	vals = map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			ignored = append(ignored, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			ignored = append(ignored, a)
			continue
		}
		name := strings.TrimLeft(a, "-")
		val, hasVal := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, val, hasVal = k, v, true
		}
		switch {
		case name == "V" || name == "version":
			b := true
			if hasVal {
				if b, err = strconv.ParseBool(val); err != nil {
					return nil, nil, nil, fmt.Errorf("flag -V: want true or false, got %q", val)
				}
			}
			vals["V"] = strconv.FormatBool(b)
		case valueFlags[name]:
			if !hasVal {
				if i+1 >= len(args) {
					return nil, nil, nil, fmt.Errorf("flag --%s needs a value", name)
				}
				i++
				val = args[i]
			}
			if _, seen := vals[name]; !seen {
				order = append(order, name)
			}
			vals[name] = val
		default:
			if !hasVal && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++
				a += " " + args[i]
			}
			ignored = append(ignored, a)
		}
	}
	return vals, order, ignored, nil
}

func readTOMLFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	kv, err := parseTOML(string(b))
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return kv, nil
}

// parseTOML reads the top-level "key = value" pairs of a TOML document:
// strings (basic and literal), booleans, numbers; tables and the keys in them
// are skipped, as are multi-line arrays. That is all DM's flat keys need.
func parseTOML(text string) (map[string]string, error) {
	kv := map[string]string{}
	inTable, inArray := false, false
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if inArray {
			if strings.Contains(line, "]") {
				inArray = false
			}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "[") {
			inTable = true
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: want key = value, got %q", i+1, line)
		}
		k = strings.Trim(strings.TrimSpace(k), `"`)
		v = strings.TrimSpace(v)
		var val string
		switch {
		case strings.HasPrefix(v, `"`):
			end := closingQuote(v)
			if end < 0 {
				return nil, fmt.Errorf("line %d: unterminated string", i+1)
			}
			s, err := strconv.Unquote(v[:end+1])
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", i+1, err)
			}
			val = s
		case strings.HasPrefix(v, "'"):
			end := strings.Index(v[1:], "'")
			if end < 0 {
				return nil, fmt.Errorf("line %d: unterminated string", i+1)
			}
			val = v[1 : end+1]
		case strings.HasPrefix(v, "["):
			if !strings.Contains(v, "]") {
				inArray = true
			}
			continue
		default:
			val, _, _ = strings.Cut(v, "#")
			val = strings.TrimSpace(val)
		}
		if !inTable {
			kv[k] = val
		}
	}
	return kv, nil
}

func closingQuote(v string) int {
	for j := 1; j < len(v); j++ {
		switch v[j] {
		case '\\':
			j++
		case '"':
			return j
		}
	}
	return -1
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseInitialCluster reads "m1=http://a:8291,m2=http://b:8291" into name → URLs.
func parseInitialCluster(s string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, p := range splitList(s) {
		name, u, ok := strings.Cut(p, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("initial-cluster entry %q: want name=http://host:port", p)
		}
		if _, err := hostOfURL(u); err != nil {
			return nil, fmt.Errorf("initial-cluster entry %q: %w", p, err)
		}
		out[name] = append(out[name], u)
	}
	return out, nil
}

func hostOfURL(u string) (string, error) {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return "", fmt.Errorf("%q is not a URL like http://host:port", u)
	}
	if _, _, err := net.SplitHostPort(p.Host); err != nil {
		return "", fmt.Errorf("%q: want a port: %w", u, err)
	}
	return p.Host, nil
}

// clientAddr strips a scheme from a --join entry.
func clientAddr(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "http://"), "https://")
	return strings.TrimSuffix(s, "/")
}
