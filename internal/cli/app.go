package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// App is what a command runs with: the standard streams, the environment
// and where the login is kept. The zero value is not usable; see FromOS.
type App struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment (DMGR_SERVER, DMGR_TOKEN, EDITOR).
	Getenv func(string) string
	// ConfigDir is where `dmgr login` keeps the server and the token
	// (config.json, 0600): os.UserConfigDir()/dmgr by default.
	ConfigDir string
	// Now is the clock (tests pass their own).
	Now func() time.Time

	// ctx is Execute's: a question waits for the answer or for it to end
	// (Ctrl-C).
	ctx context.Context

	// set by the root command's flags
	server  string
	token   string
	output  string
	timeout time.Duration
}

// FromOS is the App of the running binary.
func FromOS() *App {
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = os.TempDir()
	}
	return &App{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv,
		ConfigDir: dir + string(os.PathSeparator) + "dmgr", Now: time.Now}
}

// isTerminal reports whether w (or r) is a terminal: progress is drawn in
// place on a terminal and printed one line per event elsewhere.
func isTerminal(f any) bool {
	fd, ok := f.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(fd.Fd()))
}

// drawsBars reports whether progress bars may be drawn on w: a terminal
// wide enough for them (a terminal that reports no size, as some
// pseudo-terminals do, gets plain lines).
func drawsBars(w any) bool {
	fd, ok := w.(interface{ Fd() uintptr })
	if !ok || !term.IsTerminal(int(fd.Fd())) {
		return false
	}
	cols, _, err := term.GetSize(int(fd.Fd()))
	return err == nil && cols >= 60
}

// ExitError is a failure with the exit status the binary ends with:
// 1 for a failed request or operation, 2 for bad usage. Its message has
// been printed already when Silent is set.
type ExitError struct {
	Code   int
	Err    error
	Silent bool
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// usageError is bad usage (exit status 2).
func usageError(format string, args ...any) error {
	return &ExitError{Code: 2, Err: fmt.Errorf(format, args...)}
}

// isUsage recognises cobra's own usage errors (an unknown command or
// flag), which are plain errors.
func isUsage(err error) bool {
	var ee *ExitError
	if errors.As(err, &ee) {
		return false
	}
	m := err.Error()
	return strings.HasPrefix(m, "unknown command") || strings.HasPrefix(m, "unknown flag") ||
		strings.HasPrefix(m, "unknown shorthand flag") || strings.Contains(m, "flag needs an argument")
}

// ExitCode is the exit status for err: 0 for nil, the ExitError's code,
// 130 for an interrupt, 1 else.
func ExitCode(err error) int {
	var ee *ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.Code
	case errors.Is(err, context.Canceled):
		return 130
	default:
		return 1
	}
}

// Execute runs the root command with args and prints a failure as one
// line on stderr ("dmgr: <the problem's detail>"); it answers the exit
// status.
func (a *App) Execute(ctx context.Context, root *cobra.Command, args []string) int {
	a.ctx = ctx
	root.SetArgs(args)
	root.SetIn(a.Stdin)
	root.SetOut(a.Stdout)
	root.SetErr(a.Stderr)
	err := root.ExecuteContext(ctx)
	if err != nil && isUsage(err) {
		err = &ExitError{Code: 2, Err: err}
	}
	if err != nil {
		var ee *ExitError
		if !errors.As(err, &ee) || !ee.Silent {
			fmt.Fprintln(a.Stderr, "dmgr:", err)
		}
	}
	return ExitCode(err)
}
