package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/spf13/cobra"
)

// change is a command that changes a cluster: it shows the plan of its
// dry run, asks, sends the command and follows the operation it starts.
type change struct {
	// What names it in messages: "deploy of prod-a".
	What   string
	Method string
	Path   string
	Query  url.Values
	Body   any
	// NoDryRun: the route has no dry run (retry, cancel); Describe then
	// says what will happen.
	NoDryRun bool
	Describe func(w io.Writer) error
	// Show prints the plan (the dry run's answer) as a table; nil: the
	// generic plan table.
	Show     func(w io.Writer, plan json.RawMessage) error
	Question string
	Follow   followOptions
	Yes      bool
	DryRun   bool
	// ErrorPrefix (the topology file) goes before a refusal that is
	// about the topology.
	ErrorPrefix string
}

// changeFlags are --yes and --dry-run, which every changing command has.
type changeFlags struct {
	yes, dryRun bool
}

func addChangeFlags(cmd *cobra.Command, f *changeFlags) {
	cmd.Flags().BoolVarP(&f.yes, "yes", "y", false, "do not ask before going ahead (needed when stdin is not a terminal)")
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "only show the plan: change nothing")
}

// runChange shows the plan, asks, sends the command and follows it.
func (a *App) runChange(ctx context.Context, ch change) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	if ch.NoDryRun {
		if ch.DryRun {
			return usageError("%s has no dry run", ch.What)
		}
		if a.output == OutputTable && ch.Describe != nil {
			if err := ch.Describe(a.Stdout); err != nil {
				return err
			}
		}
	} else {
		q := url.Values{}
		for k, v := range ch.Query {
			q[k] = v
		}
		q.Set("dry_run", "true")
		var plan json.RawMessage
		if _, err := c.Do(ctx, Request{Method: ch.Method, Path: ch.Path, Query: q, Body: ch.Body}, &plan); err != nil {
			return ch.refused(err)
		}
		if a.output != OutputTable {
			if ch.DryRun {
				return a.print(plan, nil)
			}
		} else {
			show := ch.Show
			if show == nil {
				show = showPlan
			}
			if err := show(a.Stdout, plan); err != nil {
				return err
			}
		}
		if ch.DryRun {
			return nil
		}
	}
	q := ch.Question
	if q == "" {
		q = "Do you want to continue?"
	}
	if err := a.confirm(ch.Yes, q); err != nil {
		return err
	}
	var acc Accepted
	if _, err := c.Do(ctx, Request{Method: ch.Method, Path: ch.Path, Query: ch.Query, Body: ch.Body, Idempotent: true}, &acc); err != nil {
		return ch.refused(err)
	}
	if acc.ApprovalID != "" {
		if a.output != OutputTable {
			return a.print(acc, nil)
		}
		fmt.Fprintf(a.Stdout, "%s waits for approval %s: dmgr approval show %s\n", ch.What, acc.ApprovalID, acc.ApprovalID)
		return nil
	}
	if a.output == OutputTable {
		fmt.Fprintf(a.Stdout, "Started %s: operation %s\n", ch.What, acc.OperationID)
	}
	f := ch.Follow
	if f.What == "" {
		f.What = ch.What
	}
	return a.follow(ctx, c, acc.OperationID, acc.CommitSeq, f)
}

// refused is the error of a refused command: what it was, and the
// server's detail.
func (ch change) refused(err error) error {
	if ch.ErrorPrefix != "" && strings.Contains(err.Error(), "topology") {
		return fmt.Errorf("%s: %s: %w", ch.What, ch.ErrorPrefix, err)
	}
	return fmt.Errorf("%s: %w", ch.What, err)
}

// planDoc is a dry run's answer.
type planDoc struct {
	Plan struct {
		Cluster *clusterDoc `json:"cluster,omitempty"`
		Steps   []PlanStep  `json:"steps"`
	} `json:"plan"`
}

func decodePlan(raw json.RawMessage) (planDoc, error) {
	var p planDoc
	if err := json.Unmarshal(raw, &p); err != nil {
		return p, fmt.Errorf("the plan is not what this dmgr expects (%w); is the server the same version?", err)
	}
	return p, nil
}

// showPlan prints a plan as the instances it touches and the steps on
// each, in the plan's order.
func showPlan(w io.Writer, raw json.RawMessage) error {
	p, err := decodePlan(raw)
	if err != nil {
		return err
	}
	return writeStepsTable(w, p.Plan.Steps)
}

func writeStepsTable(w io.Writer, steps []PlanStep) error {
	type key struct{ host, instance string }
	var order []key
	kinds := map[key][]string{}
	roles := map[key]string{}
	hosts := map[string]bool{}
	for _, s := range steps {
		k := key{s.Host, s.Instance}
		if _, ok := kinds[k]; !ok {
			order = append(order, k)
		}
		kinds[k] = append(kinds[k], s.Kind)
		if s.Role != "" {
			roles[k] = s.Role
		}
		hosts[s.Host] = true
	}
	t := NewTable("Host", "Instance", "Role", "Steps")
	for _, k := range order {
		t.Row(orDash(k.host), orDash(k.instance), orDash(roles[k]), strings.Join(kinds[k], ", "))
	}
	if err := t.Write(w); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "Plan: %d steps on %d hosts\n", len(steps), len(hosts))
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
