// Command dm-master is the DM simulator's stand-in for TiDB DM's dm-master;
// see package dmsim.
package main

import (
	"os"

	"github.com/dmgr/dmgr/internal/testbed/dmsim"
)

func main() {
	os.Exit(dmsim.Main("dm-master", os.Args[1:], os.Stdout, os.Stderr))
}
