package dmsim

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
)

// Programs are the names Main answers to. A package ships one simulator
// binary under several of them (see cmd/dmsim).
var Programs = []string{"dm-master", "dm-worker", "dmctl", "prometheus", "alertmanager", "grafana-server", "grafana-cli"}

// Main runs one simulator program with its command-line arguments until
// SIGTERM or SIGINT, and returns the exit code: 0 after a clean stop, a
// version or help request, 2 for bad arguments, 1 otherwise. program is one
// of Programs, or "dmsim" with the program as the first argument.
func Main(program string, args []string, stdout, stderr io.Writer) int {
	if program == "dmsim" {
		if len(args) == 0 || strings.HasPrefix(args[0], "-") {
			fmt.Fprintf(stderr, "usage: dmsim <program> [args...], or install this binary as one of: %s\n", strings.Join(Programs, ", "))
			return 2
		}
		program, args = args[0], args[1:]
	}
	var (
		run          func(context.Context) error
		printVersion bool
		versionText  string
		err          error
	)
	switch program {
	case "dm-master":
		var cfg MasterConfig
		cfg, err = ParseMasterFlags(args)
		printVersion, run = cfg.PrintVersion, func(ctx context.Context) error { return RunMaster(ctx, cfg) }
		versionText = StatusText(CurrentVersion())
	case "dm-worker":
		var cfg WorkerConfig
		cfg, err = ParseWorkerFlags(args)
		printVersion, run = cfg.PrintVersion, func(ctx context.Context) error { return RunWorker(ctx, cfg) }
		versionText = StatusText(CurrentVersion())
	case "dmctl":
		return dmctl(args, stdout, stderr)
	case "prometheus":
		var cfg PrometheusConfig
		cfg, err = ParsePrometheusFlags(args)
		printVersion, run = cfg.PrintVersion, func(ctx context.Context) error { return RunPrometheus(ctx, cfg, stdout) }
		versionText = kingpinVersion(program, CurrentVersion())
	case "alertmanager":
		var cfg AlertmanagerConfig
		cfg, err = ParseAlertmanagerFlags(args)
		printVersion, run = cfg.PrintVersion, func(ctx context.Context) error { return RunAlertmanager(ctx, cfg, stdout) }
		versionText = kingpinVersion(program, CurrentVersion())
	case "grafana-server":
		var cfg GrafanaConfig
		cfg, err = ParseGrafanaFlags(args)
		printVersion, run = cfg.PrintVersion, func(ctx context.Context) error { return RunGrafana(ctx, cfg, stdout) }
		versionText = fmt.Sprintf("Version %s (commit: sim, branch: sim)\n", CurrentVersion())
	case "grafana-cli":
		return grafanaCLI(args, stdout, stderr)
	default:
		err = fmt.Errorf("unknown program %q: install this binary as one of %s, or run it as dmsim <program>", program, strings.Join(Programs, ", "))
	}
	if usage, ok := isHelp(err); ok {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", program, err)
		return 2
	}
	if printVersion {
		fmt.Fprint(stdout, versionText)
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", program, err)
		return 1
	}
	return 0
}

// dmctl prints the version for -V, --version or no arguments; the
// simulator runs no dmctl commands.
func dmctl(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || len(args) == 1 && (args[0] == "-V" || args[0] == "--V" || args[0] == "--version" || args[0] == "-version") {
		fmt.Fprint(stdout, StatusText(CurrentVersion()))
		return 0
	}
	fmt.Fprintf(stderr, "dmctl: the DM simulator's dmctl only prints its version (-V); it does not run %q\n", strings.Join(args, " "))
	return 2
}

// grafanaCLI prints the version for -v or --version; the simulator runs no
// grafana-cli commands.
func grafanaCLI(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "-v" || args[0] == "--version" || args[0] == "-version") {
		fmt.Fprintf(stdout, "Grafana CLI version %s (DM simulator, %s)\n", CurrentVersion(), runtime.Version())
		return 0
	}
	fmt.Fprintf(stderr, "grafana-cli: the DM simulator's grafana-cli only prints its version (-v); it does not run %q\n", strings.Join(args, " "))
	return 2
}
