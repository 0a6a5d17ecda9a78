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
