package dmsim

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"
)

// Main runs one simulator program ("dm-master" or "dm-worker") with its
// command-line arguments until SIGTERM or SIGINT, and returns the exit
// code: 0 after a clean stop or -V, 2 for bad arguments, 1 otherwise.
func Main(program string, args []string, stdout, stderr io.Writer) int {
	var (
		run          func(context.Context) error
		printVersion bool
		err          error
	)
	switch program {
	case "dm-master":
		var cfg MasterConfig
		cfg, err = ParseMasterFlags(args)
		printVersion, run = cfg.PrintVersion, func(ctx context.Context) error { return RunMaster(ctx, cfg) }
	case "dm-worker":
		var cfg WorkerConfig
		cfg, err = ParseWorkerFlags(args)
		printVersion, run = cfg.PrintVersion, func(ctx context.Context) error { return RunWorker(ctx, cfg) }
	default:
		err = fmt.Errorf("unknown program %q", program)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", program, err)
		return 2
	}
	if printVersion {
		fmt.Fprint(stdout, StatusText(CurrentVersion()))
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
