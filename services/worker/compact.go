package worker

import "maps"

// compacted counts one deletion from m and, once deletions since the last
// copy outnumber twice its live entries (and at least 64), returns a fresh
// copy. Go's maps never shrink and keep deleted slots as tombstones that
// later lookups probe through: a registry that once held thousands of
// channels and then lost them made every subscribe of a later churn 2-3x
// slower. The copy costs at most half an entry per deletion.
func compacted[K comparable, V any](m map[K]V, dels *int) map[K]V {
	*dels++
	if *dels < 64 || *dels < 2*len(m) {
		return m
	}
	*dels = 0
	n := make(map[K]V, len(m)) // not maps.Clone: it keeps m's capacity
	maps.Copy(n, m)
	return n
}
