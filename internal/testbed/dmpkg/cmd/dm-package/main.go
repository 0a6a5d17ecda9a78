// Command dm-package writes a DM package for tests and test hosts:
// dm-<version>.tar.gz in the seed-000 layout, whose programs are the DM
// simulator (see package testbed/dmpkg). Run it from the dmgr source tree:
//
//	go run ./internal/testbed/dmpkg/cmd/dm-package -version v8.1.0 -o DIR [-arch arm64]
//
// With -bin DIR it packs real DM binaries instead (DIR holds dm-master,
// dm-worker and dm-ctl, as pingcap/tiflow's go build names them); the
// version is then what dm-master -V reports, unless -version says another:
//
//	go run ./internal/testbed/dmpkg/cmd/dm-package -bin /tmp/realdm/cur -o DIR
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
	bin := flag.String("bin", "", "directory of real DM binaries (dm-master, dm-worker, dm-ctl) to pack instead of the simulator")
	flag.Parse()
	if (*version == "" && *bin == "") || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: dm-package -version v8.1.0 [-o DIR] [-arch amd64|arm64]\n       dm-package -bin DIR [-version V] [-o DIR]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var p string
	var err error
	if *bin != "" {
		if *version == "" {
			*version, err = dmpkg.RealVersion(ctx, *bin)
		}
		if err == nil {
			p, err = dmpkg.BuildReal(*version, *bin, *out)
		}
	} else {
		p, err = dmpkg.BuildFor(ctx, *version, *arch, *out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(p)
}
