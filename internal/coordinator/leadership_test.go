package coordinator

import (
	"fmt"
	"testing"
)

// Rendezvous hashing spreads clusters over servers evenly, and when a
// server goes only its clusters move.
func TestRendezvousSpreadsAndMovesOnlyTheDeadServersClusters(t *testing.T) {
	ld := &elections{id: "server-1", live: map[string]bool{"server-1": true, "server-2": true, "server-3": true}}
	owner := map[string]string{}
	count := map[string]int{}
	for i := range 3000 {
		c := fmt.Sprintf("cluster-%d", i)
		owner[c] = ld.preferredLocked(c)
		count[owner[c]]++
	}
	for s, n := range count {
		if n < 850 || n > 1150 {
			t.Errorf("%s is preferred for %d of 3000 clusters; want about 1000 each: %v", s, n, count)
		}
	}
	delete(ld.live, "server-3")
	for c, was := range owner {
		now := ld.preferredLocked(c)
		if was != "server-3" && now != was {
			t.Fatalf("%s moved from %s to %s although %s is alive", c, was, now, was)
		}
		if now == "server-3" {
			t.Fatalf("%s still prefers the dead server-3", c)
		}
	}
}
