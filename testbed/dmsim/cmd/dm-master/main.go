// Command dm-master is the DM simulator's stand-in for TiDB DM's dm-master;
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
	cfg, err := dmsim.ParseMasterFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "dm-master:", err)
		os.Exit(2)
	}
	if cfg.PrintVersion {
		fmt.Print(dmsim.StatusText(dmsim.CurrentVersion()))
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := dmsim.RunMaster(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
