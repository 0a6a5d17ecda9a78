// Command dmsim is the DM simulator as one binary: it runs the program it is
// installed as (filepath.Base of its path: dm-master, dm-worker, dmctl,
// prometheus, alertmanager, grafana-server, grafana-cli), so that a test
// package ships the same file under every name. Run as "dmsim" it takes the
// program as its first argument: dmsim prometheus --config.file=….
// See package dmsim.
package main

import (
	"os"
	"path/filepath"

	"github.com/dmgr/dmgr/internal/testbed/dmsim"
)

func main() {
	os.Exit(dmsim.Main(filepath.Base(os.Args[0]), os.Args[1:], os.Stdout, os.Stderr))
}
