// Command dm-worker is the DM simulator's stand-in for TiDB DM's dm-worker;
// see package dmsim.
package main

import (
	"os"

	"github.com/dmgr/dmgr/internal/testbed/dmsim"
)

func main() {
	os.Exit(dmsim.Main("dm-worker", os.Args[1:], os.Stdout, os.Stderr))
}
