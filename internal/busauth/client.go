package busauth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// ClientOptions are the connection options of id: its nkey from the seed
// file (read again at every connect and never kept in memory) and its
// inbox prefix. The file is checked as LoadSeed does.
func ClientOptions(id Identity, seedFile string) ([]nats.Option, error) {
	if _, err := LoadSeed(seedFile, id); err != nil {
		return nil, err
	}
	nkey, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		return nil, fmt.Errorf("NATS seed file %s: %w", seedFile, err)
	}
	return []nats.Option{nkey, nats.CustomInboxPrefix(id.InboxPrefix())}, nil
}

// ProbeTimeout bounds one anonymous probe when the context allows more.
const ProbeTimeout = 3 * time.Second

// ErrNoAnswer says that no server of the list answered the probe, so it
// cannot tell whether the bus takes anonymous connections.
var ErrNoAnswer = errors.New("no NATS server answered the anonymous probe")

// ProbeAnonymous connects without credentials to every server in urls (a
// comma-separated list, as nats.Connect takes it), each under a short
// deadline, and reports the first that accepts the connection ("" when
// every server that answered refused it). opts may add TLS settings; they
// must carry no credentials. When no server answers at all the error is
// ErrNoAnswer, wrapped with each server's error.
func ProbeAnonymous(ctx context.Context, urls string, opts ...nats.Option) (string, error) {
	var errs []error
	answered := false
	for _, u := range strings.Split(urls, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		timeout := ProbeTimeout
		if dl, ok := ctx.Deadline(); ok {
			timeout = min(timeout, time.Until(dl))
		}
		if timeout <= 0 || ctx.Err() != nil {
			return "", fmt.Errorf("probe %s: %w", u, context.Cause(ctx))
		}
		o := append([]nats.Option{nats.Name("dmgr anonymous probe"), nats.Timeout(timeout), nats.NoReconnect(),
			nats.DontRandomize(), nats.IgnoreAuthErrorAbort()}, opts...)
		nc, err := nats.Connect(u, o...)
		if err == nil {
			nc.Close()
			return u, nil
		}
		if errors.Is(err, nats.ErrAuthorization) {
			answered = true
			continue
		}
		errs = append(errs, fmt.Errorf("%s: %w", u, err))
	}
	if !answered {
		return "", fmt.Errorf("%w: %w", ErrNoAnswer, errors.Join(errs...))
	}
	return "", nil
}
