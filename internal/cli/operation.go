package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

func (a *App) addOperationCommands(root *cobra.Command) {
	cmd := &cobra.Command{
		Use:     "operation",
		Aliases: []string{"op"},
		Short:   "List, show and follow operations; retry, cancel or roll them back",
	}
	cmd.AddCommand(a.operationListCommand(), a.operationShowCommand(), a.operationWatchCommand(),
		a.operationRetryCommand(), a.operationCancelCommand(), a.operationRollbackCommand())
	root.AddCommand(cmd)
}

func (a *App) operationListCommand() *cobra.Command {
	var cluster, status, kind string
	cmd := a.listCommand(listSpec{path: "/api/v1/operations", noun: "operations", short: "List operations, newest first",
		example: "  dmgr operation list --cluster prod-a --status failed\n  dmgr operation list --cluster prod-a --limit 1 -o json"},
		func() (url.Values, error) { return queryOf("cluster", cluster, "status", status, "kind", kind), nil }, writeOperations)
	cmd.Flags().StringVar(&cluster, "cluster", "", "only operations of this cluster")
	cmd.Flags().StringVar(&status, "status", "", "only operations in this status (running, succeeded, failed, cancelled)")
	cmd.Flags().StringVar(&kind, "kind", "", "only operations of this kind (deploy, scale-out, upgrade, …)")
	_ = cmd.RegisterFlagCompletionFunc("cluster", a.completeClusters)
	return cmd
}

var writeOperations = itemsTable([]string{"ID", "Kind", "Cluster", "Status", "Attempt", "Actor", "Created"}, func(op operationView) []string {
	return []string{op.ID, op.Kind, orDash(op.Cluster), op.Status, attemptText(op.Attempt), op.Actor, timeText(op.CreatedAt)}
})

func attemptText(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func (a *App) operationShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "show ID",
		Short:             "Show an operation and its steps: status, attempt, agent, duration and error",
		Args:              args(1, 1, "ID"),
		ValidArgsFunction: a.completeOperations,
		RunE: func(cmd *cobra.Command, args []string) error {
			op, raw, err := a.readOperation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(raw, func(w io.Writer) error { return writeOperation(w, op) })
		},
	}
}

// readOperation reads an operation with the command's login: decoded,
// and as the API sent it.
func (a *App) readOperation(ctx context.Context, id string) (operationView, json.RawMessage, error) {
	c, err := a.client()
	if err != nil {
		return operationView{}, nil, err
	}
	return getOperationDoc(ctx, c, id, 0)
}

func writeOperation(w io.Writer, op operationView) error {
	kv := [][2]string{{"Operation", op.ID}, {"Kind", op.Kind}, {"Cluster", orDash(op.Cluster)}, {"Status", op.Status},
		{"Attempt", attemptText(op.Attempt)}, {"Actor", op.Actor}, {"Created", timeText(op.CreatedAt)}}
	if op.Error != "" {
		kv = append(kv, [2]string{"Error", oneLine(op.Error)})
	}
	if err := KeyValues(w, kv...); err != nil {
		return err
	}
	if len(op.Steps) == 0 {
		return nil
	}
	t := NewTable("Step", "Host", "Status", "Attempt", "Agent", "Duration", "Error")
	for _, s := range op.Steps {
		d := "-"
		if s.DurationMS > 0 {
			d = formatDuration(time.Duration(s.DurationMS) * time.Millisecond)
		}
		t.Row(s.ID, orDash(s.Host), firstNonEmpty(s.Status, "pending"), attemptText(s.Attempt), orDash(s.Agent), d, oneLine(s.Error))
	}
	return t.Write(w)
}

func (a *App) operationWatchCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "watch ID",
		Short: "Follow an operation until it ends (exit 1 when it fails)",
		Long: `Follow an operation from its start until it ends: on a terminal one line per
host with a bar of its steps, redrawn in place; otherwise one line per step
event (time, step, host, instance, what happened, duration). Ctrl-C stops
following (exit 130); the operation goes on. The exit status is 0 when the
operation succeeds, 1 when it fails or is cancelled.`,
		Args:              args(1, 1, "ID"),
		ValidArgsFunction: a.completeOperations,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return a.follow(cmd.Context(), c, args[0], 0, followOptions{})
		},
	}
}

func (a *App) operationRetryCommand() *cobra.Command {
	var f changeFlags
	cmd := &cobra.Command{
		Use:   "retry ID",
		Short: "Resume a failed or cancelled operation from its failed steps",
		Long: `Resume a failed or cancelled operation: its failed steps run again, the
ones that succeeded are not. The command shows the steps that will run
again, asks, and follows the new attempt.`,
		Args:              args(1, 1, "ID"),
		ValidArgsFunction: a.completeOperations,
		RunE: func(cmd *cobra.Command, args []string) error {
			op, _, err := a.readOperation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.runChange(cmd.Context(), change{What: "retry of " + describeOperation(op), Method: http.MethodPost,
				Path: pathf("/api/v1/operations/%s/retry", op.ID), NoDryRun: true, Yes: f.yes, DryRun: f.dryRun,
				Describe: func(w io.Writer) error {
					var again []PlanStep
					for _, s := range op.Steps {
						if s.Status != statusSucceeded {
							again = append(again, PlanStep{ID: s.ID, Kind: s.Kind, Host: s.Host, Instance: s.Instance})
						}
					}
					fmt.Fprintf(w, "Operation %s (%s) is %s after attempt %d; these steps run again:\n", op.ID, describeOperation(op), op.Status, op.Attempt)
					return writeStepsTable(w, again)
				},
				Follow: followOptions{FromAttempt: op.Attempt + 1}})
		},
	}
	addChangeFlags(cmd, &f)
	return cmd
}

func (a *App) operationCancelCommand() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a running operation: nothing more starts, running steps finish",
		Long: `Cancel a running operation: nothing more is dispatched, the running steps
finish, then the operation is cancelled. The command follows it until then.
dmgr operation retry resumes a cancelled operation.`,
		Args:              args(1, 1, "ID"),
		ValidArgsFunction: a.completeOperations,
		RunE: func(cmd *cobra.Command, args []string) error {
			op, _, err := a.readOperation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.runChange(cmd.Context(), change{What: "cancel of " + describeOperation(op), Method: http.MethodPost,
				Path: pathf("/api/v1/operations/%s/cancel", op.ID), NoDryRun: true, Yes: yes,
				Question: fmt.Sprintf("Cancel operation %s (%s, %s)?", op.ID, describeOperation(op), op.Status),
				Follow:   followOptions{What: describeOperation(op), Want: statusCancelled}})
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask")
	return cmd
}

func (a *App) operationRollbackCommand() *cobra.Command {
	var f changeFlags
	cmd := &cobra.Command{
		Use:   "rollback ID",
		Short: "Roll back an upgrade: return the instances it switched to their old files",
		Long: `Roll back an upgrade that failed or was cancelled (or the cluster's last
upgrade): a new operation stops, switches back and starts every instance
whose roll had begun, one at a time, in the reverse order.`,
		Args:              args(1, 1, "ID"),
		ValidArgsFunction: a.completeOperations,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runChange(cmd.Context(), change{What: "rollback of " + args[0], Method: http.MethodPost,
				Path: pathf("/api/v1/operations/%s/rollback", args[0]), Yes: f.yes, DryRun: f.dryRun})
		},
	}
	addChangeFlags(cmd, &f)
	return cmd
}
