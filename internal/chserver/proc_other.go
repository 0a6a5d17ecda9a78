//go:build unix && !linux

package chserver

import "syscall"

// sysProcAttr puts the server in its own process group. Outside Linux there
// is no parent-death signal: a server whose dmgr process is killed keeps
// running until stopped by hand.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
