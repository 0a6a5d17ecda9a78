package cli

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"

	"github.com/spf13/cobra"
)

func (a *App) clusterDisplayCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "display NAME",
		Short: "Show a cluster's instances with their status probed now (as tiup dm display)",
		Long: `Show a cluster and its instances as tiup dm display does: ID, Role, Host,
Ports, OS/Arch, Status (Up, Up|L for the dm-master leader, Down,
Unreachable, N/A for an instance dmgr has not started yet), Data Dir and
Deploy Dir; plus each dm-worker's stage and bound source. The status is
probed by the server now (GET /status and dm-master's members API).
-o json and -o yaml print the probed cluster as the API answers it.`,
		Args:              args(1, 1, "NAME"),
		ValidArgsFunction: a.completeClusters,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var live liveDoc
			raw, err := getDoc(ctx, c, Request{Method: http.MethodGet, Path: pathf("/api/v1/clusters/%s", args[0]), Query: map[string][]string{"status": {"live"}}}, &live)
			if err != nil {
				return err
			}
			if a.output != OutputTable {
				return a.print(raw, nil)
			}
			cl, err := getCluster(ctx, c, args[0])
			if err != nil {
				return err
			}
			return writeDisplay(a.Stdout, cl, live)
		},
	}
	return cmd
}

// writeDisplay prints a cluster as tiup dm display does.
func writeDisplay(w io.Writer, cl clusterDoc, live liveDoc) error {
	kv := [][2]string{
		{"Cluster type", "dm"},
		{"Cluster name", cl.Name},
		{"Cluster version", cl.Version},
		{"Deploy user", firstNonEmpty(cl.Global.User, "tidb")},
		{"SSH type", "builtin"},
	}
	for _, in := range cl.Instances {
		if in.Role == roleGrafana {
			kv = append(kv, [2]string{"Grafana URL", "http://" + net.JoinHostPort(in.Host, strconv.Itoa(in.Port))})
		}
	}
	if url := dashboardURL(cl, live); url != "" {
		kv = append(kv, [2]string{"Dashboard URL", url})
	}
	kv = append(kv, [2]string{"Status", cl.Status}, [2]string{"Group", firstNonEmpty(cl.Group, "default")})
	if l := labelsText(cl.Labels); l != "" {
		kv = append(kv, [2]string{"Labels", l})
	}
	if err := KeyValues(w, kv...); err != nil {
		return err
	}
	statusOf := map[string]int{}
	for i, in := range live.Instances {
		statusOf[in.ID] = i
	}
	t := NewTable("ID", "Role", "Host", "Ports", "OS/Arch", "Status", "Data Dir", "Deploy Dir", "Stage", "Source")
	for _, in := range cl.Instances {
		status, stage, source := "N/A", "", ""
		if i, ok := statusOf[in.ID]; ok {
			li := live.Instances[i]
			status, stage, source = tiupStatus(li.Status), li.Stage, li.Source
		}
		data := in.DataDir
		if data == "" {
			data = "-"
		}
		t.Row(in.ID, in.Role, in.Host, portsText(in), osArch(in.OS, in.Arch, cl.Global.OS, cl.Global.Arch), status,
			data, in.DeployDir, orDash(stage), orDash(source))
	}
	if err := t.Write(w); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "Total nodes: %d\n", len(cl.Instances))
	return err
}

// tiupStatus is the API's live status as tiup shows it: "Up|L" for the
// leader.
func tiupStatus(s string) string {
	if s == "Up|Leader" {
		return "Up|L"
	}
	if s == "" {
		return "N/A"
	}
	return s
}

// dashboardURL is DM's web UI on the leader dm-master, when the cluster
// turns DM's OpenAPI on (server_configs.master.openapi: true).
func dashboardURL(cl clusterDoc, live liveDoc) string {
	sc, err := effectiveServerConfigs(cl)
	if err != nil {
		return ""
	}
	if on, _ := sc["master"]["openapi"].(bool); !on {
		return ""
	}
	for _, in := range live.Instances {
		if in.Role == roleMaster && in.Status == "Up|Leader" {
			return "http://" + net.JoinHostPort(in.Host, strconv.Itoa(in.Port)) + "/dashboard/"
		}
	}
	return ""
}
