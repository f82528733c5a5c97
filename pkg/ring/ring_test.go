package ring

import (
	"fmt"
	"testing"
)

func TestOwnerStableAndBalanced(t *testing.T) {
	r3 := New([]string{"b", "a", "c"})
	if r3.Owner("x") != New([]string{"c", "b", "a"}).Owner("x") {
		t.Fatal("owner depends on order")
	}
	counts := map[string]int{}
	const n = 30000
	for i := 0; i < n; i++ {
		counts[r3.Owner(fmt.Sprint("ch", i))]++
	}
	for id, c := range counts {
		if c < n/3*8/10 || c > n/3*12/10 {
			t.Errorf("broker %s owns %d of %d", id, c, n)
		}
	}
}

func TestMinimalMovement(t *testing.T) {
	r3 := New([]string{"a", "b", "c"})
	r4 := New([]string{"a", "b", "c", "d"})
	r2 := New([]string{"a", "c"})
	moved, movedOther := 0, 0
	const n = 20000
	for i := 0; i < n; i++ {
		ch := fmt.Sprint("ch", i)
		if o3, o4 := r3.Owner(ch), r4.Owner(ch); o3 != o4 {
			moved++
			if o4 != "d" {
				t.Fatalf("%s moved from %s to %s, not to the new broker", ch, o3, o4)
			}
		}
		if o3, o2 := r3.Owner(ch), r2.Owner(ch); o3 != o2 && o3 != "b" {
			movedOther++
		}
	}
	if moved < n/4*8/10 || moved > n/4*12/10 {
		t.Errorf("adding a 4th broker moved %d of %d", moved, n)
	}
	if movedOther != 0 {
		t.Errorf("removing b moved %d channels it did not own", movedOther)
	}
	if New(nil).Owner("x") != "" {
		t.Error("empty ring has an owner")
	}
}

func BenchmarkOwner(b *testing.B) {
	r := New([]string{"broker-0", "broker-1", "broker-2", "broker-3", "broker-4"})
	for b.Loop() {
		_ = r.Owner("room:lobby:1234")
	}
}
