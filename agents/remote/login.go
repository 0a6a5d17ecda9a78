package remote

import (
	"context"
	"errors"
	"time"
)

// ErrLoginRefused is in the chain of an error when the host refused the
// target's credential (errors.Is).
var ErrLoginRefused = errors.New("the host refused the login")

// loginRefusedError marks an authentication failure; its message is the
// SSH library's.
type loginRefusedError struct{ err error }

func (e loginRefusedError) Error() string        { return e.err.Error() }
func (e loginRefusedError) Unwrap() error        { return e.err }
func (e loginRefusedError) Is(target error) bool { return target == ErrLoginRefused }

// unreachableError marks a failure to reach the host: no TCP connection,
// or no complete SSH handshake (as opposed to a refused login or a changed
// host key).
type unreachableError struct{ err error }

func (e unreachableError) Error() string { return e.err.Error() }
func (e unreachableError) Unwrap() error { return e.err }

// Unreachable reports whether err says that the host could not be
// reached: no connection to its SSH port, or no complete SSH handshake.
func Unreachable(err error) bool {
	var u unreachableError
	return errors.As(err, &u)
}

// Login runs cmd once on t over a connection of its own, closed before it
// returns, within dialTimeout for the connection: for a check of a host
// that is not a registered machine yet (an import checks that the key it
// was given logs in everywhere before it records anything). Errors are
// Run's; Unreachable and errors.Is(err, ErrLoginRefused) tell them apart.
func Login(ctx context.Context, t Target, cmd string, o RunOptions, dialTimeout time.Duration) (Result, error) {
	p := NewPool(Options{DialTimeout: dialTimeout, KeepAlive: -1, MaxSessionsPerHost: 1})
	defer p.Close()
	return p.Run(ctx, t, cmd, o)
}
