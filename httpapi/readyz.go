package httpapi

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Defaults of the readiness cache.
const (
	defaultReadyTTL     = time.Second
	defaultReadyTimeout = 2 * time.Second
)

// readyCache runs the readiness check at most once per TTL: concurrent
// callers share one computation, which runs under its own deadline (not a
// caller's, so one client going away fails nobody else), and its result
// is reused until it is TTL old.
type readyCache struct {
	check   func(ctx context.Context) error
	ttl     time.Duration
	timeout time.Duration

	mu       sync.Mutex
	err      error
	at       time.Time
	valid    bool
	inflight chan struct{} // closed when the running computation ends
	joined   int           // callers that waited for a computation (for tests)
}

func newReadyCache(check func(ctx context.Context) error, ttl, timeout time.Duration) *readyCache {
	if ttl <= 0 {
		ttl = defaultReadyTTL
	}
	if timeout <= 0 {
		timeout = defaultReadyTimeout
	}
	return &readyCache{check: check, ttl: ttl, timeout: timeout}
}

// get returns the cached result, or waits for the one being computed
// (starting it when none is), or for ctx to end.
func (c *readyCache) get(ctx context.Context) error {
	c.mu.Lock()
	if c.valid && time.Since(c.at) < c.ttl {
		err := c.err
		c.mu.Unlock()
		return err
	}
	if c.inflight == nil {
		c.inflight = make(chan struct{})
		go c.compute(c.inflight)
	}
	done := c.inflight
	c.joined++
	c.mu.Unlock()
	select {
	case <-done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *readyCache) compute(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	res := make(chan error, 1)
	go func() { res <- c.check(ctx) }()
	var err error
	select {
	case err = <-res:
	case <-ctx.Done():
		err = fmt.Errorf("the readiness check did not finish within %s", c.timeout)
	}
	cancel()
	c.mu.Lock()
	c.err, c.at, c.valid, c.inflight = err, time.Now(), true, nil
	c.mu.Unlock()
	close(done)
}
