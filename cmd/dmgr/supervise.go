package main

import (
	"context"
	"errors"
	"fmt"
)

// part is one long-running part of a dmgr process (the coordinator, the
// projector, the agent loop, the HTTP server): it runs until its context
// ends, and returning before that is a failure of the whole process.
type part struct {
	name string
	run  func(context.Context) error
}

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

// fail records the first failure of a part and closes Failed.
func (m *Main) fail(name string, err error) {
	if err == nil {
		err = errors.New("it stopped without an error")
	}
	m.failMu.Lock()
	defer m.failMu.Unlock()
	if m.failure != nil {
		return
	}
	m.failure = fmt.Errorf("%s stopped: %w", name, err)
	m.log.Error().Err(err).Str("part", name).Msg("a part of the process stopped: the process exits")
	close(m.failed)
}

// startBackground runs each part until Close. A part that returns while
// ctx is live fails the process (fail); errors of parts that return after
// are kept for Close to return.
func (m *Main) startBackground(ctx context.Context, parts []part) {
	m.bgDone = make(chan struct{})
	errs := make(chan error, len(parts))
	for _, p := range parts {
		go func() {
			err := p.run(ctx)
			if ctx.Err() == nil {
				m.fail(p.name, err)
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
