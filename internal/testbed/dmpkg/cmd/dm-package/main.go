// Command dm-package writes a DM package for tests and test hosts:
// dm-<version>.tar.gz in the seed-000 layout, whose programs are the DM
// simulator (see package testbed/dmpkg). Run it from the dmgr source tree:
//
//	go run ./testbed/dmpkg/cmd/dm-package -version v8.1.0 -o DIR [-arch arm64]
//
// It prints the path of the package it wrote.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/dmgr/dmgr/internal/testbed/dmpkg"
)

func main() {
	version := flag.String("version", "", "DM version the package claims, like v8.1.0 (required)")
	out := flag.String("o", ".", "directory to write dm-<version>.tar.gz into")
	arch := flag.String("arch", runtime.GOARCH, "linux arch of the binaries: amd64 or arm64")
	flag.Parse()
	if *version == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: dm-package -version v8.1.0 [-o DIR] [-arch amd64|arm64]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p, err := dmpkg.BuildFor(ctx, *version, *arch, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(p)
}
