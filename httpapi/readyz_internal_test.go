package httpapi

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Concurrent callers share one computation, even when every result is
// already expired (TTL of 1 ns), and all get its result.
func TestReadyCacheSharesOneComputation(t *testing.T) {
	var calls atomic.Int32
	release := make(chan struct{})
	boom := errors.New("etcd: down")
	c := newReadyCache(func(ctx context.Context) error {
		calls.Add(1)
		<-release
		return boom
	}, time.Nanosecond, time.Minute)
	const n = 50
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = c.get(context.Background()) }()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		c.mu.Lock()
		joined := c.joined
		c.mu.Unlock()
		if joined == n {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("only %d of %d callers joined", joined, n)
		case <-time.After(time.Millisecond):
		}
	}
	close(release)
	wg.Wait()
	if got := calls.Load(); got != 1 {
		t.Fatalf("%d concurrent callers ran the check %d times, want once", n, got)
	}
	for i, err := range errs {
		if !errors.Is(err, boom) {
			t.Fatalf("caller %d got %v", i, err)
		}
	}
	// A caller that gives up does not wait for the computation.
	block := make(chan struct{})
	defer close(block)
	c2 := newReadyCache(func(context.Context) error { <-block; return nil }, time.Second, time.Minute)
	gone, stop := context.WithCancel(context.Background())
	stop()
	if err := c2.get(gone); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled caller got %v", err)
	}
}
