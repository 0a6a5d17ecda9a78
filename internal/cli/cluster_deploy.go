package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

func (a *App) clusterDeployCommand() *cobra.Command {
	var (
		f      changeFlags
		group  string
		labels []string
	)
	cmd := &cobra.Command{
		Use:   "deploy NAME VERSION TOPOLOGY.yaml",
		Short: "Deploy a cluster from a tiup dm topology file",
		Long: `Deploy a DM cluster from a topology file in tiup dm's format (global,
server_configs, master_servers, worker_servers, monitoring_servers,
grafana_servers, alertmanager_servers). The package of VERSION must be
uploaded (dmgr package upload) and every host a registered machine
(dmgr machine add). The plan is shown as tiup shows it (role, host, ports,
OS/arch, directories) and the command asks before it deploys.`,
		Example: "  dmgr cluster deploy prod-a v8.1.0 topology.yaml\n  dmgr cluster deploy prod-a v8.1.0 topology.yaml --group payments --label env=prod --yes",
		Args:    args(3, 3, "NAME VERSION TOPOLOGY.yaml"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 2 {
				return []string{"yaml", "yml"}, cobra.ShellCompDirectiveFilterFileExt
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name, version, file := args[0], args[1], args[2]
			topo, err := readTopology(file)
			if err != nil {
				return err
			}
			lbl, err := parseLabels(labels)
			if err != nil {
				return err
			}
			body := map[string]any{"name": name, "version": version, "topology": topo}
			if group != "" {
				body["group"] = group
			}
			if len(lbl) > 0 {
				body["labels"] = lbl
			}
			return a.runChange(cmd.Context(), change{What: "deploy of " + name, Method: http.MethodPost, Path: "/api/v1/clusters",
				Body: body, Yes: f.yes, DryRun: f.dryRun, Show: func(w io.Writer, raw json.RawMessage) error {
					return showDeployPlan(w, raw, name, version, file)
				}, ErrorPrefix: file})
		},
	}
	addChangeFlags(cmd, &f)
	cmd.Flags().StringVar(&group, "group", "", "the group that owns the cluster (default: default)")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "a label of the cluster, key=value (env=prod); repeat for more")
	return cmd
}

// readTopology reads a topology file (at most 1 MiB, what the API takes).
func readTopology(file string) (string, error) {
	st, err := os.Stat(file)
	if err != nil {
		return "", usageError("topology %s: %v", file, errNoPath(err))
	}
	if !st.Mode().IsRegular() {
		return "", usageError("topology %s: not a file", file)
	}
	if st.Size() > 1<<20 {
		return "", usageError("topology %s: %d bytes, more than the 1 MiB a topology may have", file, st.Size())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", usageError("topology %s: %v", file, errNoPath(err))
	}
	if strings.TrimSpace(string(b)) == "" {
		return "", usageError("topology %s is empty", file)
	}
	return string(b), nil
}

// errNoPath drops the path from an *os.PathError (the message names the
// file already).
func errNoPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// parseLabels reads key=value pairs.
func parseLabels(kv []string) (map[string]string, error) {
	out := map[string]string{}
	for _, s := range kv {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, usageError("--label %q: want key=value", s)
		}
		if _, dup := out[k]; dup {
			return nil, usageError("--label %s is given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

// showDeployPlan prints a deploy's plan as tiup dm deploy asks for
// confirmation: the cluster, then one row per instance.
func showDeployPlan(w io.Writer, raw json.RawMessage, name, version, file string) error {
	p, err := decodePlan(raw)
	if err != nil {
		return err
	}
	if err := KeyValues(w, [2]string{"Cluster type", "dm"}, [2]string{"Cluster name", name}, [2]string{"Cluster version", version}); err != nil {
		return err
	}
	var instances []instanceDoc
	global := struct{ OS, Arch string }{}
	if cl := p.Plan.Cluster; cl != nil {
		instances = cl.Instances
		global.OS, global.Arch = cl.Global.OS, cl.Global.Arch
	}
	if err := instancesTable(instances, global.OS, global.Arch).Write(w); err != nil {
		return err
	}
	hosts := map[string]bool{}
	for _, s := range p.Plan.Steps {
		hosts[s.Host] = true
	}
	_, err = fmt.Fprintf(w, `Plan: %d steps on %d hosts (--dry-run -o yaml lists them)
Attention:
    1. If the topology is not what you expected, check %s.
    2. dmgr checked that no port or directory clashes on a host, with this
       topology or with other clusters.
`, len(p.Plan.Steps), len(hosts), file)
	return err
}

// instancesTable is tiup's deploy table: Role, Host, Ports, OS/Arch,
// Directories.
func instancesTable(instances []instanceDoc, os, arch string) *Table {
	t := NewTable("Role", "Host", "Ports", "OS/Arch", "Directories")
	for _, in := range instances {
		dirs := []string{in.DeployDir}
		if in.DataDir != "" && in.DataDir != in.DeployDir {
			dirs = append(dirs, in.DataDir)
		}
		t.Row(in.Role, in.Host, portsText(in), osArch(in.OS, in.Arch, os, arch), strings.Join(dirs, ","))
	}
	return t
}

func portsText(in instanceDoc) string {
	s := strconv.Itoa(in.Port)
	if in.PeerPort != 0 {
		s += "/" + strconv.Itoa(in.PeerPort)
	}
	return s
}

// osArch is tiup's "linux/x86_64" of an instance (its own, else the
// topology's, else linux/amd64).
func osArch(os, arch, defOS, defArch string) string {
	os = firstNonEmpty(os, defOS, "linux")
	arch = firstNonEmpty(arch, defArch, "amd64")
	switch arch {
	case "amd64":
		arch = "x86_64"
	case "arm64":
		arch = "aarch64"
	}
	return os + "/" + arch
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
