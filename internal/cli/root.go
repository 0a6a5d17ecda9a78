package cli

import (
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// NewRoot is the `dmgr` command with every client subcommand, plus extra
// (the server side's commands: dev, server, agent, …, built by cmd/dmgr).
func (a *App) NewRoot(extra ...*cobra.Command) *cobra.Command {
	root := &cobra.Command{
		Use:   "dmgr",
		Short: "Manage TiDB DM clusters: deploy, scale, upgrade, patch, start/stop and destroy them over SSH",
		Long: `dmgr manages TiDB DM clusters: deploy, scale, upgrade, patch, start/stop and
destroy them over SSH, with every change recorded as an event.

The client commands talk to a dmgr server: log in once with
  dmgr login --server http://dmgr.example:7700 --user alice
and then use the commands named like tiup dm's:
  dmgr cluster deploy prod-a v8.1.0 topology.yaml
  dmgr cluster display prod-a`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return checkOutput(a.output)
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	f := root.PersistentFlags()
	f.StringVar(&a.server, "server", "", "URL of the dmgr server (default $DMGR_SERVER, then the server of dmgr login)")
	f.StringVar(&a.token, "token", "", "API token (default $DMGR_TOKEN, then the token of dmgr login)")
	f.StringVarP(&a.output, "output", "o", OutputTable, "output format: table, json or yaml")
	f.DurationVar(&a.timeout, "request-timeout", time.Minute, "deadline of each request to the server (not of following an operation)")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{OutputTable, OutputJSON, OutputYAML}, cobra.ShellCompDirectiveNoFileComp))

	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &ExitError{Code: 2, Err: err} })
	for _, add := range []func(*cobra.Command){
		a.addSessionCommands,   // login, logout, whoami (session.go)
		a.addClusterCommands,   // cluster … (cluster*.go)
		a.addOperationCommands, // operation … (operation.go)
		a.addMachineCommands,   // machine … (machine.go)
		a.addPackageCommands,   // package … (package.go)
		a.addAuditCommand,      // audit (audit.go)
		a.addPeopleCommands,    // user, group, token, approval (people.go)
		a.addCompletionCommand, // completion bash|zsh (completion.go)
	} {
		add(root)
	}
	root.AddGroup(&cobra.Group{ID: "client", Title: "Client commands (they talk to a dmgr server):"},
		&cobra.Group{ID: "server", Title: "Running dmgr itself:"})
	for _, c := range root.Commands() {
		if c.GroupID == "" {
			c.GroupID = "client"
		}
	}
	for _, c := range root.Commands() {
		groupsRunParent(c)
	}
	for _, c := range extra {
		root.AddCommand(c)
	}
	return root
}

// args checks a command's positional arguments: between min and max of
// them (max < 0: no limit), named in usage in the error (exit status 2).
func args(min, max int, usage string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if len(a) < min || (max >= 0 && len(a) > max) {
			return usageError("usage: %s %s (see %s --help)", cmd.CommandPath(), usage, cmd.CommandPath())
		}
		return nil
	}
}

// groupsRunParent gives every command below cmd that only groups others
// (cluster, machine, group member, …) parentRun, so that a mistyped
// subcommand is bad usage (exit 2) rather than help and exit 0.
func groupsRunParent(cmd *cobra.Command) {
	if cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil {
		cmd.RunE = parentRun
	}
	for _, c := range cmd.Commands() {
		groupsRunParent(c)
	}
}

// parentRun runs a command that only groups others: alone it prints its
// help; with an argument that names none of them it is bad usage.
func parentRun(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		var names []string
		for _, c := range cmd.Commands() {
			if c.IsAvailableCommand() {
				names = append(names, c.Name())
			}
		}
		return usageError("%s has no command %q: use %s (see %s --help)", cmd.CommandPath(), args[0], strings.Join(names, ", "), cmd.CommandPath())
	}
	return cmd.Help()
}
