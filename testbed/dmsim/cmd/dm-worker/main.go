// Command dm-worker is the DM simulator's stand-in for TiDB DM's dm-worker;
// see package dmsim.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/dmgr/dmgr/testbed/dmsim"
)

func main() {
	cfg, err := dmsim.ParseWorkerFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "dm-worker:", err)
		os.Exit(2)
	}
	if cfg.PrintVersion {
		fmt.Print(dmsim.StatusText(dmsim.CurrentVersion()))
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := dmsim.RunWorker(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
