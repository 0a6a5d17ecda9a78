package cli

import (
	"net/http"

	"github.com/spf13/cobra"
)

func (a *App) clusterScaleOutCommand() *cobra.Command {
	var f changeFlags
	cmd := &cobra.Command{
		Use:   "scale-out NAME FRAGMENT.yaml",
		Short: "Add the instances of a topology fragment to a cluster",
		Long: `Add instances to a cluster from a topology fragment in tiup dm's format with
only *_servers sections (master_servers, worker_servers, …): the cluster's
global settings and server_configs apply, so a fragment with global: is
refused. New dm-masters join the running ones one at a time, new
dm-workers join every master, and prometheus is updated to scrape them.`,
		Example:           "  dmgr cluster scale-out prod-a scale-out.yaml",
		Args:              args(2, 2, "NAME FRAGMENT.yaml"),
		ValidArgsFunction: a.completeClusterThenFile,
		RunE: func(cmd *cobra.Command, args []string) error {
			topo, err := readTopology(args[1])
			if err != nil {
				return err
			}
			return a.runChange(cmd.Context(), change{What: "scale-out of " + args[0], Method: http.MethodPost,
				Path: pathf("/api/v1/clusters/%s/scale-out", args[0]), Body: map[string]any{"topology": topo},
				Yes: f.yes, DryRun: f.dryRun, ErrorPrefix: args[1]})
		},
	}
	addChangeFlags(cmd, &f)
	return cmd
}

func (a *App) clusterScaleInCommand() *cobra.Command {
	var (
		f     changeFlags
		nodes []string
		force bool
	)
	cmd := &cobra.Command{
		Use:   "scale-in NAME -N host:port...",
		Short: "Remove instances from a cluster",
		Long: `Remove instances (-N host:port as dmgr cluster display shows them). A
dm-master is taken offline through the members API and stopped; a
dm-worker is stopped and taken offline; then their directories are
removed and their ports freed. The last dm-master is never removed, and
without --force neither is a majority of the masters at once. --force
skips DM's members API (for a dead host).`,
		Example:           "  dmgr cluster scale-in prod-a -N 10.0.0.3:8262\n  dmgr cluster scale-in prod-a -N 10.0.0.3:8261,10.0.0.3:8262 --yes",
		Args:              args(1, 1, "NAME -N host:port..."),
		ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(nodes) == 0 {
				return usageError("scale-in of %s: name the instances to remove with -N host:port", args[0])
			}
			return a.runChange(cmd.Context(), change{What: "scale-in of " + args[0], Method: http.MethodPost,
				Path: pathf("/api/v1/clusters/%s/scale-in", args[0]), Body: map[string]any{"nodes": nodes, "force": force},
				Yes: f.yes, DryRun: f.dryRun})
		},
	}
	addChangeFlags(cmd, &f)
	cmd.Flags().StringSliceVarP(&nodes, "node", "N", nil, "the instances to remove, host:port; repeat or separate with commas")
	cmd.Flags().BoolVar(&force, "force", false, "skip DM's members API (the host is gone)")
	return cmd
}
