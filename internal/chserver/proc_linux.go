package chserver

import "syscall"

// sysProcAttr puts the server in its own process group (so signals reach
// anything it spawns and a terminal's Ctrl-C goes to dmgr only, which then
// stops the server in order) and has the kernel SIGKILL it when the thread
// that started it dies. The goroutine that starts the process keeps its OS
// thread locked until the process has been reaped (see run), so no other
// goroutine can end that thread early, and the signal fires only when the
// dmgr process dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
