package agents

import (
	"fmt"
	"testing"
)

// The state cache keeps at most its size, dropping the least recently
// used, and hands out the same value for a key while it keeps it.
func TestLRU(t *testing.T) {
	made := 0
	c := newLRU(3, func() *int { made++; v := made; return &v })
	a := c.get("a")
	c.get("b")
	c.get("c")
	if c.get("a") != a || made != 3 {
		t.Fatalf("a was made again (%d made)", made)
	}
	c.get("d") // drops b, the least recently used
	if c.len() != 3 {
		t.Fatalf("%d kept, want 3", c.len())
	}
	if c.get("a") != a {
		t.Fatal("a, used recently, was dropped")
	}
	if before := made; *c.get("b") != before+1 {
		t.Fatal("b was kept")
	}
	for i := range 1000 {
		c.get(fmt.Sprint(i))
	}
	if c.len() != 3 {
		t.Fatalf("%d kept after 1000 keys, want 3", c.len())
	}
}

// Checks that arrive while a view is read share the next read; a check
// never uses a read that began before it arrived.
func TestFreshCoalescesReads(t *testing.T) {
	var f fresh
	reads := 0
	use := func(read bool) error {
		if read {
			reads++
		}
		return nil
	}
	// A reads; B and C arrive while A's read runs.
	inA, releaseA := make(chan struct{}), make(chan struct{})
	done := make(chan error, 3)
	go func() {
		done <- f.refresh(f.arrive(), func(read bool) error {
			close(inA)
			<-releaseA
			return use(read)
		})
	}()
	<-inA
	b, c := f.arrive(), f.arrive()
	go func() { done <- f.refresh(b, use) }()
	go func() { done <- f.refresh(c, use) }()
	close(releaseA)
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	// A's read began before B and C arrived: one more read serves both.
	if reads != 2 {
		t.Fatalf("%d reads, want 2 (A's, then one for B and C)", reads)
	}
	// A failed read serves no one.
	d := f.arrive()
	if err := f.refresh(d, func(bool) error { return fmt.Errorf("down") }); err == nil {
		t.Fatal("the failed read's error was not returned")
	}
	var read bool
	if err := f.refresh(d, func(r bool) error { read = r; return nil }); err != nil || !read {
		t.Fatalf("after a failed read: read %t, %v; want a read", read, err)
	}
}
