package cli

import (
	"context"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// completionDeadline bounds the API call behind a completion: a shell
// must never hang on a tab.
const completionDeadline = 2 * time.Second

// completionLimit bounds what a completion lists: one page of the list.
const completionLimit = 200

func (a *App) addCompletionCommand(root *cobra.Command) {
	cmd := &cobra.Command{
		Use:   "completion bash|zsh",
		Short: "Print the shell completion script for bash or zsh",
		Long: `Print the completion script of dmgr for bash or zsh. Besides commands and
flags it completes cluster names, operation ids and machine hosts from the
server (within 2 s, with the stored login).

  bash:  source <(dmgr completion bash)       # or save it in /etc/bash_completion.d/dmgr
  zsh:   dmgr completion zsh > "${fpath[1]}/_dmgr"`,
		ValidArgs: []string{"bash", "zsh"},
		Args:      args(1, 1, "bash|zsh"),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(a.Stdout, true)
			case "zsh":
				return root.GenZshCompletion(a.Stdout)
			}
			return usageError("completion %q: bash or zsh", args[0])
		},
	}
	root.AddCommand(cmd)
}

// completeFrom lists names from a list route for a completion.
func completeFrom[T any](a *App, path string, q url.Values, name func(T) string, toComplete string) []string {
	c, err := a.client()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), completionDeadline)
	defer cancel()
	q = cloneValues(q)
	q.Set("limit", strconv.Itoa(completionLimit))
	_, raw, _, err := fetchPages(ctx, c, path, "items", q, false)
	if err != nil {
		return nil
	}
	items, err := decodeItems[T](raw)
	if err != nil {
		return nil
	}
	var out []string
	for _, it := range items {
		if n := name(it); strings.HasPrefix(n, toComplete) {
			out = append(out, n)
		}
	}
	return out
}

// completeClusters completes a command's first argument with the names
// of the clusters.
func (a *App) completeClusters(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return completeFrom(a, "/api/v1/clusters", nil, func(c clusterDoc) string { return c.Name }, toComplete), cobra.ShellCompDirectiveNoFileComp
}

// completeClusterThenFile completes a cluster, then a file.
func (a *App) completeClusterThenFile(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) == 0 {
		return a.completeClusters(cmd, args, toComplete)
	}
	if len(args) == 1 {
		return nil, cobra.ShellCompDirectiveDefault
	}
	return nil, cobra.ShellCompDirectiveNoFileComp
}

// completeOperations completes with the ids of the newest operations.
func (a *App) completeOperations(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return completeFrom(a, "/api/v1/operations", nil, func(o operationView) string {
		return o.ID + "\t" + o.Kind + " " + o.Cluster + " " + o.Status
	}, toComplete), cobra.ShellCompDirectiveNoFileComp
}

// completeHosts completes with the registered machines' hosts.
func (a *App) completeHosts(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return completeFrom(a, "/api/v1/machines", nil, func(m machineDoc) string { return m.Host }, toComplete), cobra.ShellCompDirectiveNoFileComp
}
