package main

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
)

// part is one long-running part of a dmgr process (the HTTP server, the
// coordinator, the projector, the agent's steps and its registration): it
// runs until its context ends, and returning before that is a failure of
// the whole process.
type part struct {
	name string
	run  func(context.Context) error
}

// errKilled is the cause of a part's context ended by killPart.
var errKilled = errors.New("killed")

// Failed is closed when a part of the process stops while the process
// runs; Failure then says which and why. `dmgr dev|server|agent` exit
// non-zero on it, so that a supervisor (systemd) restarts the process
// rather than leave it answering /readyz while doing nothing.
func (m *Main) Failed() <-chan struct{} { return m.failed }

// Failure is the reason the process failed (after Failed is closed).
func (m *Main) Failure() error {
	m.failMu.Lock()
	defer m.failMu.Unlock()
	return m.failure
}

// fail records the first failure of a part and closes Failed. A part that
// stops while Close takes the process down is no failure.
func (m *Main) fail(name string, err error) {
	if err == nil {
		err = errors.New("it stopped without an error")
	}
	m.failMu.Lock()
	defer m.failMu.Unlock()
	if m.failure != nil || m.closing.Load() {
		return
	}
	m.failure = fmt.Errorf("%s stopped: %w", name, err)
	m.log.Error().Err(err).Str("part", name).Msg("a part of the process stopped: the process exits")
	close(m.failed)
}

// partNames lists the parts the process runs, in the order they started.
func (m *Main) partNames() []string {
	m.failMu.Lock()
	defer m.failMu.Unlock()
	return slices.Clone(m.names)
}

// killPart ends one part's context, as if the part had died, with cause
// errKilled: the process must then fail, naming it. It reports whether a
// part of that name runs. Tests use it to check that every part is
// supervised.
func (m *Main) killPart(name string) bool {
	m.failMu.Lock()
	kill := m.kills[name]
	m.failMu.Unlock()
	if kill != nil {
		kill(errKilled)
	}
	return kill != nil
}

// startBackground runs each part until Close, each under a context of its
// own. A part that returns (or panics) while ctx is live and Close has not
// begun fails the process (fail); errors of parts that return after are
// kept for Close to return.
func (m *Main) startBackground(ctx context.Context, parts []part) {
	m.bgDone = make(chan struct{})
	errs := make(chan error, len(parts))
	m.failMu.Lock()
	if m.kills == nil {
		m.kills = map[string]context.CancelCauseFunc{}
	}
	for _, p := range parts {
		m.names = append(m.names, p.name)
	}
	m.failMu.Unlock()
	for _, p := range parts {
		pctx, kill := context.WithCancelCause(ctx)
		m.failMu.Lock()
		m.kills[p.name] = kill
		m.failMu.Unlock()
		go func() {
			defer kill(nil)
			err := runPart(pctx, p)
			if ctx.Err() == nil && !m.closing.Load() {
				if pctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
					err = context.Cause(pctx) // killed
				}
				// Failure reports it; Close does not report it again.
				m.fail(p.name, err)
				errs <- nil
				return
			}
			switch {
			case ctx.Err() != nil && errors.Is(err, context.Canceled):
				err = nil // stopped by Close, as asked
			case err != nil:
				err = fmt.Errorf("%s: %w", p.name, err)
			}
			errs <- err
		}()
	}
	go func() {
		defer close(m.bgDone)
		var all []error
		for range parts {
			if err := <-errs; err != nil {
				all = append(all, err)
			}
		}
		m.bgErr = errors.Join(all...)
	}()
}

// runPart runs a part; a panic is its failure, with the stack.
func runPart(ctx context.Context, p part) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return p.run(ctx)
}
