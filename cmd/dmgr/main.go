// Command dmgr is the DM cluster management platform: `dmgr dev` runs
// everything in one process, `dmgr server` runs the API and the coordinator
// against external NATS JetStream, etcd and ClickHouse, `dmgr agent` runs
// steps over SSH, `dmgr bus init` writes the NATS users' seeds and
// permissions, and `dmgr version` prints the build.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/dmgr/dmgr/internal/cli"
)

const usage = `dmgr manages TiDB DM clusters: deploy, scale, upgrade, patch, start/stop and
destroy them over SSH, with every change recorded as an event.

Usage:
  dmgr dev      [flags]   everything in one process: embedded NATS JetStream and
                          etcd, a local ClickHouse, the HTTP API, the
                          coordinator and one agent
  dmgr server   [flags]   the HTTP API and the coordinator against external NATS,
                          etcd and ClickHouse
  dmgr agent    [flags]   run steps from the work queue on machines over SSH;
                          package files come from a local cache (--cache-dir,
                          --cache-max-bytes), each checked by its SHA-256
  dmgr projections rebuild [flags]
                          replay the event stream into fresh ClickHouse tables
                          and switch the queries over to them
  dmgr bus init --dir DIR [--pool NAME]...
                          write one NATS nkey seed per role (server, agent per
                          pool, projector, admin) and the nats-server users
                          with their permissions (DIR/nats-auth.conf)
  dmgr version            print the version

Run "dmgr <command> -h" for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := cli.FromOS()
	os.Exit(app.Execute(ctx, app.NewRoot(serverCommands(ctx, app.Stdout, app.Stderr)...), os.Args[1:]))
}

// serverCommands are the commands of dmgr's own processes (dev, server,
// agent, projections, bus, version) as subcommands of the one root: each
// passes its arguments, flags included, to run, which parses them with the
// standard flag package as before.
func serverCommands(ctx context.Context, stdout, stderr io.Writer) []*cobra.Command {
	short := map[string]string{
		"dev":         "Run everything in one process: embedded NATS JetStream and etcd, a local ClickHouse, the API, the coordinator and one agent",
		"server":      "Run the HTTP API and the coordinator against external NATS, etcd and ClickHouse",
		"agent":       "Run steps from the work queue on machines over SSH",
		"projections": "Rebuild the ClickHouse projections from the event stream (projections rebuild)",
		"bus":         "Write the NATS users' seeds and permissions (bus init)",
		"version":     "Print the version",
	}
	var cmds []*cobra.Command
	for _, name := range []string{"dev", "server", "agent", "projections", "bus", "version"} {
		cmds = append(cmds, &cobra.Command{
			Use:                name,
			Short:              short[name],
			GroupID:            "server",
			DisableFlagParsing: true,
			RunE: func(_ *cobra.Command, args []string) error {
				err := run(ctx, append([]string{name}, args...), stdout, stderr)
				if errors.Is(err, flag.ErrHelp) {
					return &cli.ExitError{Code: 2, Err: err, Silent: true}
				}
				if err != nil {
					return &cli.ExitError{Code: 2, Err: err}
				}
				return nil
			},
		})
	}
	return cmds
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionLine())
		return nil
	case "dev", "server", "agent":
		cfg, err := parseConfig(args[0], args[1:], stderr)
		if err != nil {
			return err
		}
		log := zerolog.New(stderr).With().Timestamp().Logger().Level(cfg.logLevel)
		m := NewMain(cfg, log, stdout)
		if err := m.Run(ctx); err != nil {
			m.Close()
			return err
		}
		select {
		case <-ctx.Done():
			log.Info().Msg("shutting down")
			return m.Close()
		case <-m.Failed():
			// A part stopped: exit non-zero with the reason, so that the
			// supervisor restarts the process.
			err := m.Failure()
			if cerr := m.Close(); cerr != nil {
				log.Warn().Err(cerr).Msg("close after the failure")
			}
			return fmt.Errorf("dmgr %s: %w", args[0], err)
		}
	case "projections":
		return runProjections(ctx, args[1:], stdout, stderr)
	case "bus":
		return runBus(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

// subcommand checks that args name the one subcommand of `dmgr group`
// (want); otherwise it prints the group's usage and answers flag.ErrHelp
// for a request of help, an error naming the unknown command else.
func subcommand(args []string, group, want, usage string, stderr io.Writer) error {
	if len(args) > 0 && args[0] == want {
		return nil
	}
	fmt.Fprint(stderr, usage)
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		return flag.ErrHelp
	}
	return fmt.Errorf("unknown %s command %q", group, args[0])
}
