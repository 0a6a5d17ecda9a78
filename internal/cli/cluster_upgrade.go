package cli

import (
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
)

func (a *App) clusterUpgradeCommand() *cobra.Command {
	var (
		f    changeFlags
		wait time.Duration
	)
	cmd := &cobra.Command{
		Use:   "upgrade NAME VERSION",
		Short: "Upgrade a cluster to another uploaded version, one instance at a time",
		Long: `Upgrade a cluster to VERSION, whose package must be uploaded. The new files
are put next to the old ones on every instance first; then one instance at
a time is stopped, switched and started, and must be healthy before the
next: dm-master followers, the leader, dm-workers, then monitoring. A
failure stops the roll: dmgr operation retry resumes it, dmgr operation
rollback returns the instances already switched to the old files.`,
		Example:           "  dmgr cluster upgrade prod-a v8.5.0",
		Args:              args(2, 2, "NAME VERSION"),
		ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]any{"version": args[1]}
			if wait > 0 {
				body["wait_timeout_sec"] = int(wait.Round(time.Second) / time.Second)
			}
			return a.runChange(cmd.Context(), change{What: "upgrade of " + args[0] + " to " + args[1], Method: http.MethodPost,
				Path: pathf("/api/v1/clusters/%s/upgrade", args[0]), Body: body, Yes: f.yes, DryRun: f.dryRun})
		},
	}
	addChangeFlags(cmd, &f)
	cmd.Flags().DurationVar(&wait, "wait-timeout", 0, "how long each instance may take to be healthy after its start (default 2m, at most 1h)")
	return cmd
}

func (a *App) clusterPatchCommand() *cobra.Command {
	var (
		f        changeFlags
		sel      selection
		parallel int
		wait     time.Duration
		up       uploadFlags
	)
	cmd := &cobra.Command{
		Use:   "patch NAME PACKAGE -R role | -N host:port",
		Short: "Replace the binary of some instances by the one of another package",
		Long: `Replace the component binary (bin/dm-master, bin/dm-worker, …) of the
selected instances by the one in PACKAGE, and restart them in the upgrade's
order. PACKAGE is the id of an uploaded package (dmgr package list, e.g.
dm-v8.1.0-hotfix.1-linux-amd64), or a package file (dm-v8.1.0-hotfix.1.tar.gz),
which is uploaded first. Unlike tiup dm patch, a patch is a whole package in
the seed layout, not a bare binary tarball. The binary replaced is kept as
<binary>.before-<operation id>. The cluster's version does not change.

--parallel restarts up to N instances at a time (never more than a minority
of the dm-masters); each batch is healthy before the next one stops.`,
		Example:           "  dmgr cluster patch prod-a dm-v8.1.0-hotfix.1.tar.gz -R dm-worker --parallel 2",
		Args:              args(2, 2, "NAME PACKAGE"),
		ValidArgsFunction: a.completeClusterThenFile,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := sel.check(); err != nil {
				return err
			}
			if len(sel.roles) == 0 && len(sel.nodes) == 0 {
				return usageError("patch of %s: select the instances with -R role or -N host:port", args[0])
			}
			if parallel < 0 || parallel > 64 {
				return usageError("--parallel %d: want 1 to 64", parallel)
			}
			pkg := args[1]
			if st, err := os.Stat(pkg); err == nil && st.Mode().IsRegular() && !f.dryRun {
				id, err := a.uploadPackage(cmd.Context(), pkg, up)
				if err != nil {
					return err
				}
				pkg = id
			} else if err == nil && f.dryRun {
				return usageError("patch --dry-run with a file: upload it first (dmgr package upload %s) and name its id", pkg)
			}
			body := map[string]any{"package": pkg}
			if len(sel.roles) > 0 {
				body["roles"] = sel.roles
			}
			if len(sel.nodes) > 0 {
				body["nodes"] = sel.nodes
			}
			if parallel > 0 {
				body["parallel"] = parallel
			}
			if wait > 0 {
				body["wait_timeout_sec"] = int(wait.Round(time.Second) / time.Second)
			}
			return a.runChange(cmd.Context(), change{What: "patch of " + args[0], Method: http.MethodPost,
				Path: pathf("/api/v1/clusters/%s/patch", args[0]), Body: body, Yes: f.yes, DryRun: f.dryRun})
		},
	}
	addChangeFlags(cmd, &f)
	addSelectionFlags(cmd, &sel)
	cmd.Flags().IntVar(&parallel, "parallel", 0, "restart up to N instances at a time (default 1; masters: never more than a minority)")
	cmd.Flags().DurationVar(&wait, "wait-timeout", 0, "how long each instance may take to be healthy after its start (default 2m)")
	addUploadFlags(cmd, &up)
	return cmd
}
