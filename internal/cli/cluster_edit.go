package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

func (a *App) clusterEditConfigCommand() *cobra.Command {
	var f changeFlags
	cmd := &cobra.Command{
		Use:   "edit-config NAME",
		Short: "Edit a cluster's server_configs in $EDITOR, then reload the cluster with them",
		Long: `Open the cluster's server_configs (the master: and worker: sections of a
tiup dm topology, as YAML) in $EDITOR (vi when it is not set). When the
file is saved changed, the command shows the reload's plan, asks, and
reloads the cluster with the new server_configs: every instance whose
rendered config changes is restarted, one at a time. Invalid YAML is
refused and opened again; unchanged contents change nothing.`,
		Args:              args(1, 1, "NAME"),
		ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.client()
			if err != nil {
				return err
			}
			cl, err := getCluster(ctx, c, args[0])
			if err != nil {
				return err
			}
			old, err := effectiveServerConfigs(cl)
			if err != nil {
				return err
			}
			edited, changed, err := a.editServerConfigs(ctx, cl.Name, old)
			if err != nil {
				return err
			}
			if !changed {
				fmt.Fprintf(a.Stdout, "server_configs of %s unchanged: nothing to do\n", cl.Name)
				return nil
			}
			return a.runChange(ctx, change{What: "reload of " + cl.Name, Method: http.MethodPost,
				Path: pathf("/api/v1/clusters/%s/reload", cl.Name), Body: map[string]any{"server_configs": edited},
				Yes: f.yes, DryRun: f.dryRun})
		},
	}
	addChangeFlags(cmd, &f)
	return cmd
}

const editHeader = `# server_configs of cluster %s, as in a tiup dm topology (master:, worker:).
# Save and quit to reload the cluster with them; leave them unchanged to do nothing.
`

// editServerConfigs opens sc in the editor until it is valid YAML of
// the right shape (or the user gives up) and answers it and whether it
// changed.
func (a *App) editServerConfigs(ctx context.Context, cluster string, sc map[string]map[string]any) (map[string]map[string]any, bool, error) {
	body, err := yaml.Marshal(sc)
	if err != nil {
		return nil, false, fmt.Errorf("server_configs of %s: %w", cluster, err)
	}
	if len(sc) == 0 {
		body = []byte("master: {}\nworker: {}\n")
	}
	dir, err := os.MkdirTemp("", "dmgr-edit-")
	if err != nil {
		return nil, false, fmt.Errorf("edit-config: %w", err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, cluster+"-server_configs.yaml")
	text := append([]byte(fmt.Sprintf(editHeader, cluster)), body...)
	if err := os.WriteFile(file, text, 0o600); err != nil {
		return nil, false, fmt.Errorf("edit-config: %w", err)
	}
	for {
		if err := a.runEditor(ctx, file); err != nil {
			return nil, false, err
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, false, fmt.Errorf("edit-config: %w", err)
		}
		edited, err := parseServerConfigs(b)
		if err == nil {
			return edited, !sameConfigs(sc, edited), nil
		}
		fmt.Fprintf(a.Stderr, "%s: %v\n", filepath.Base(file), err)
		if cerr := a.confirm(false, "Edit again?"); cerr != nil {
			return nil, false, &ExitError{Code: 1, Err: fmt.Errorf("server_configs of %s: %w; nothing was changed", cluster, err)}
		}
	}
}

// parseServerConfigs reads edited server_configs: a mapping of sections
// (master, worker, …) to mappings.
func parseServerConfigs(b []byte) (map[string]map[string]any, error) {
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	out := map[string]map[string]any{}
	for k, v := range raw {
		switch s := v.(type) {
		case nil:
			out[k] = map[string]any{}
		case map[string]any:
			out[k] = s
		default:
			return nil, fmt.Errorf("section %s: want a mapping (key: value lines under %s:), not %T", k, k, v)
		}
	}
	if _, err := json.Marshal(out); err != nil {
		return nil, fmt.Errorf("cannot be sent as JSON: %w", err)
	}
	return out, nil
}

// sameConfigs compares two server_configs as JSON values (1 and 1.0,
// empty and absent sections are alike).
func sameConfigs(a, b map[string]map[string]any) bool {
	norm := func(m map[string]map[string]any) any {
		clean := map[string]map[string]any{}
		for k, v := range m {
			if len(v) > 0 {
				clean[k] = v
			}
		}
		j, _ := json.Marshal(clean)
		var out any
		_ = json.Unmarshal(j, &out)
		return out
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

// runEditor runs $EDITOR (vi when unset) on file, through the shell so
// that EDITOR may carry arguments ("code --wait").
func (a *App) runEditor(ctx context.Context, file string) error {
	editor := strings.TrimSpace(a.Getenv("EDITOR"))
	if editor == "" {
		editor = "vi"
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", editor+` "$1"`, "dmgr-editor", file)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = a.Stdin, a.Stdout, a.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("the editor (%s) failed: %w; nothing was changed", editor, err)
	}
	return nil
}
