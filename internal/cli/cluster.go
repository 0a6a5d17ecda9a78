package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

// clusterDoc is a cluster as GET /api/v1/clusters/{name} answers it (the
// fields the command line reads).
type clusterDoc struct {
	Name      string            `json:"name"`
	Version   string            `json:"version"`
	PackageID string            `json:"package_id"`
	Status    string            `json:"status"`
	Group     string            `json:"group"`
	Labels    map[string]string `json:"labels,omitempty"`
	Topology  string            `json:"topology"`
	Global    struct {
		User           string `json:"user"`
		SSHPort        int    `json:"ssh_port"`
		Arch           string `json:"arch"`
		OS             string `json:"os"`
		ServiceManager string `json:"service_manager"`
	} `json:"global"`
	Instances     []instanceDoc             `json:"instances"`
	ServerConfigs map[string]map[string]any `json:"server_configs,omitempty"`
}

type instanceDoc struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Role      string `json:"role"`
	Host      string `json:"host"`
	Port      int    `json:"port"`
	PeerPort  int    `json:"peer_port,omitempty"`
	DeployDir string `json:"deploy_dir"`
	DataDir   string `json:"data_dir"`
	LogDir    string `json:"log_dir"`
	Arch      string `json:"arch,omitempty"`
	OS        string `json:"os,omitempty"`
	Status    string `json:"status,omitempty"`
}

// liveDoc is GET /api/v1/clusters/{name}?status=live.
type liveDoc struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Status    string `json:"status"`
	Instances []struct {
		ID        string `json:"id"`
		Name      string `json:"name"`
		Role      string `json:"role"`
		Host      string `json:"host"`
		Port      int    `json:"port"`
		Status    string `json:"status"`
		Version   string `json:"version,omitempty"`
		Stage     string `json:"stage,omitempty"`
		Source    string `json:"source,omitempty"`
		DeployDir string `json:"deploy_dir"`
		DataDir   string `json:"data_dir"`
		Error     string `json:"error,omitempty"`
	} `json:"instances"`
}

// Roles as topologies name them.
const (
	roleMaster  = "dm-master"
	roleWorker  = "dm-worker"
	roleGrafana = "grafana"
)

var allRoles = []string{roleMaster, roleWorker, "prometheus", roleGrafana, "alertmanager"}

func getCluster(ctx context.Context, c *Client, name string) (clusterDoc, error) {
	var cl clusterDoc
	_, err := c.Do(ctx, Request{Method: http.MethodGet, Path: pathf("/api/v1/clusters/%s", name)}, &cl)
	return cl, err
}

func (a *App) addClusterCommands(root *cobra.Command) {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Deploy, display, scale, upgrade, patch, start/stop, reload and destroy DM clusters (as tiup dm does)",
		Long: `The commands of tiup dm, run by the dmgr server on its machines over SSH.

Every command that changes a cluster first shows its plan (the server's dry
run) and asks before it goes ahead (--yes answers for you, --dry-run only
shows the plan); then it follows the operation until it ends, with a line
per host redrawn in place on a terminal, or one line per step otherwise.
Ctrl-C stops following, not the operation. A command that the cluster
group's approval policy holds waits for an approval and the command exits 0.`,
	}
	cmd.AddCommand(a.clusterListCommand(), a.clusterDisplayCommand(), a.clusterDeployCommand(),
		a.clusterScaleOutCommand(), a.clusterScaleInCommand(), a.clusterUpgradeCommand(), a.clusterPatchCommand(),
		a.clusterControlCommand("start"), a.clusterControlCommand("stop"), a.clusterControlCommand("restart"),
		a.clusterReloadCommand(), a.clusterEditConfigCommand(), a.clusterDestroyCommand(), a.clusterImportCommand())
	root.AddCommand(cmd)
}

func (a *App) clusterListCommand() *cobra.Command {
	var status string
	cmd := a.listCommand(listSpec{path: "/api/v1/clusters", noun: "clusters", short: "List the clusters you may see, by name",
		example: "  dmgr cluster list --status running\n  dmgr cluster list --all -o json"},
		func() (url.Values, error) { return queryOf("status", status), nil }, writeClusters)
	cmd.Flags().StringVar(&status, "status", "", "only clusters in this status (running, deploying, …)")
	return cmd
}

var writeClusters = itemsTable([]string{"Name", "Version", "Status", "Group", "Instances", "Labels"}, func(cl clusterDoc) []string {
	return []string{cl.Name, cl.Version, cl.Status, cl.Group, strconv.Itoa(len(cl.Instances)), labelsText(cl.Labels)}
})

func labelsText(l map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(l) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}

// selection is -R/--role and -N/--node, as tiup dm's.
type selection struct {
	roles, nodes []string
}

func addSelectionFlags(cmd *cobra.Command, s *selection) {
	cmd.Flags().StringSliceVarP(&s.roles, "role", "R", nil, "only instances of these roles ("+strings.Join(allRoles, ", ")+"); repeat or separate with commas")
	cmd.Flags().StringSliceVarP(&s.nodes, "node", "N", nil, "only these instances, as host:port from dmgr cluster display; repeat or separate with commas")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions(allRoles, cobra.ShellCompDirectiveNoFileComp))
}

func (s selection) check() error {
	for _, r := range s.roles {
		if !contains(allRoles, r) {
			return usageError("-R %s: not a role; the roles are %s", r, strings.Join(allRoles, ", "))
		}
	}
	return nil
}

func (a *App) clusterControlCommand(kind string) *cobra.Command {
	var (
		sel selection
		f   changeFlags
	)
	verb := map[string]string{"start": "Start", "stop": "Stop", "restart": "Restart"}[kind]
	order := map[string]string{
		"start":   "masters, workers, then monitoring",
		"stop":    "monitoring, workers, then masters",
		"restart": "group by group in the start order",
	}[kind]
	cmd := &cobra.Command{
		Use:               kind + " NAME",
		Short:             verb + " a cluster's instances (all, or those of -R and -N)",
		Long:              verb + " a cluster's instances, " + order + ". -R and -N select instances; given both, an instance must match both.",
		Args:              args(1, 1, "NAME"),
		ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := sel.check(); err != nil {
				return err
			}
			body := map[string]any{}
			if len(sel.roles) > 0 {
				body["roles"] = sel.roles
			}
			if len(sel.nodes) > 0 {
				body["nodes"] = sel.nodes
			}
			return a.runChange(cmd.Context(), change{What: kind + " of " + args[0], Method: http.MethodPost,
				Path: pathf("/api/v1/clusters/%s/"+kind, args[0]), Body: body, Yes: f.yes, DryRun: f.dryRun})
		},
	}
	addSelectionFlags(cmd, &sel)
	addChangeFlags(cmd, &f)
	return cmd
}

func (a *App) clusterReloadCommand() *cobra.Command {
	var f changeFlags
	cmd := &cobra.Command{
		Use:   "reload NAME",
		Short: "Render every instance's configs again and restart the instances whose files changed, one at a time",
		Long: `Render every instance's configs again and restart, one at a time (masters,
workers, monitoring), only the instances whose rendered files changed.
dmgr cluster edit-config changes the server_configs and reloads. Unlike
tiup dm reload, there is no -R or -N: the API reloads the whole cluster,
and instances whose files did not change are not restarted.`,
		Args:              args(1, 1, "NAME"),
		ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runChange(cmd.Context(), change{What: "reload of " + args[0], Method: http.MethodPost,
				Path: pathf("/api/v1/clusters/%s/reload", args[0]), Yes: f.yes, DryRun: f.dryRun})
		},
	}
	addChangeFlags(cmd, &f)
	return cmd
}

func (a *App) clusterDestroyCommand() *cobra.Command {
	var (
		f                 changeFlags
		retainData, force bool
	)
	cmd := &cobra.Command{
		Use:   "destroy NAME",
		Short: "Stop every instance and remove its files (data kept with --retain-data)",
		Long: `Stop every instance (monitoring first, masters last) and remove its deploy,
log and data directories and its service; the machines are free afterwards.
Only directories dmgr owns are removed: those that carry this cluster's
.dmgr-owned marker (and, of an imported cluster, its instances' directories
that carry no marker at all); anything else is left and named.
--retain-data keeps the data directories. --force forgets a cluster whose
hosts are gone: each host is tried once, and the cluster is destroyed
whatever they answer.`,
		Args:              args(1, 1, "NAME"),
		ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if retainData {
				q.Set("retain_data", "true")
			}
			var body any
			if force {
				q.Set("force", "true")
				body = map[string]string{"name": args[0]}
			}
			return a.runChange(cmd.Context(), change{What: "destroy of " + args[0], Method: http.MethodDelete,
				Path: pathf("/api/v1/clusters/%s", args[0]), Query: q, Body: body, Yes: f.yes, DryRun: f.dryRun,
				Question: "This destroys cluster " + args[0] + " and its data" + map[bool]string{true: " (kept: --retain-data)", false: ""}[retainData] + ". Do you want to continue?"})
		},
	}
	addChangeFlags(cmd, &f)
	cmd.Flags().BoolVar(&retainData, "retain-data", false, "keep the instances' data directories")
	cmd.Flags().BoolVar(&force, "force", false, "forget a cluster whose hosts are gone (each host tried once, best effort)")
	return cmd
}

// effectiveServerConfigs is the server_configs the cluster's configs are
// rendered from: the last reload's, or its topology's.
func effectiveServerConfigs(cl clusterDoc) (map[string]map[string]any, error) {
	if cl.ServerConfigs != nil {
		return cl.ServerConfigs, nil
	}
	var topo struct {
		ServerConfigs map[string]map[string]any `yaml:"server_configs"`
	}
	if err := yaml.Unmarshal([]byte(cl.Topology), &topo); err != nil {
		return nil, fmt.Errorf("cluster %s: read server_configs from its topology: %w", cl.Name, err)
	}
	if topo.ServerConfigs == nil {
		topo.ServerConfigs = map[string]map[string]any{}
	}
	return topo.ServerConfigs, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
