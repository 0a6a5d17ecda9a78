package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/internal/testenv"
)

// A part that stops while the process runs, with an error or without,
// fails the process with its name and reason; parts that stop because the
// process closes do not.
func TestAPartThatStopsFailsTheProcess(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"with an error", errors.New("etcd session lost"), "coordinator stopped: etcd session lost"},
		{"without one", nil, "coordinator stopped: it stopped without an error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs testenv.Buffer
			m := NewMain(config{}, zerolog.New(&logs), io.Discard)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stop := make(chan struct{})
			m.startBackground(ctx, []part{
				{"coordinator", func(context.Context) error { <-stop; return tc.err }},
				{"projector", func(ctx context.Context) error { <-ctx.Done(); return nil }},
			})
			select {
			case <-m.Failed():
				t.Fatal("failed before any part stopped")
			default:
			}
			close(stop)
			select {
			case <-m.Failed():
			case <-time.After(10 * time.Second):
				t.Fatal("a stopped part did not fail the process")
			}
			if err := m.Failure(); err == nil || err.Error() != tc.want {
				t.Fatalf("failure %v, want %q", err, tc.want)
			}
			if !strings.Contains(logs.String(), `"part":"coordinator"`) {
				t.Fatalf("the failure is not logged with its part:\n%s", logs.String())
			}
			cancel()
			<-m.bgDone
		})
	}

	// Closing: every part stops, none fails the process.
	m := NewMain(config{}, zerolog.Nop(), io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	m.startBackground(ctx, []part{{"agent", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}})
	cancel()
	<-m.bgDone
	select {
	case <-m.Failed():
		t.Fatalf("a part stopped by Close failed the process: %v", m.Failure())
	default:
	}
}

// A part that panics fails the process with the panic and its stack, as
// one that returns; the other parts stop with the process.
func TestAPartThatPanicsFailsTheProcess(t *testing.T) {
	var logs testenv.Buffer
	m := NewMain(config{}, zerolog.New(&logs), io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m.startBackground(ctx, []part{
		{"projector", func(context.Context) error { panic("projection of a nil view") }},
		{"coordinator", func(ctx context.Context) error { <-ctx.Done(); return nil }},
	})
	select {
	case <-m.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("a part that panicked did not fail the process")
	}
	if err := m.Failure(); err == nil || !strings.HasPrefix(err.Error(), "projector stopped: panic: projection of a nil view") ||
		!strings.Contains(err.Error(), "goroutine") {
		t.Fatalf("failure %v, want the panic with its stack", err)
	}
	if !strings.Contains(logs.String(), `"part":"projector"`) {
		t.Fatalf("the failure is not logged with its part:\n%s", logs.String())
	}
	cancel()
	<-m.bgDone
}

// The HTTP server of a running dmgr dev dies (its listener closed under
// it): the process fails, naming it.
func TestDevFailsWhenItsHTTPServerDies(t *testing.T) {
	d := startInProcessDev(t, append(unreachableClickHouse(t), "--agent=false")...)
	select {
	case <-d.main.Failed():
		t.Fatalf("dev failed at start: %v", d.main.Failure())
	default:
	}
	if err := d.main.httpLn.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.main.Failed():
	case <-time.After(30 * time.Second):
		t.Fatal("dev keeps running without its HTTP server")
	}
	if err := d.main.Failure(); err == nil || !strings.HasPrefix(err.Error(), "HTTP server stopped: ") {
		t.Fatalf("failure %v, want the HTTP server named", err)
	}
}
