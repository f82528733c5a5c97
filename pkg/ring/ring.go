// Package ring maps channels to brokers by rendezvous hashing: a channel
// belongs to the broker with the highest score of hash(channel) mixed with
// hash(broker id). Adding a broker moves about 1/N of the channels to it;
// removing one moves only its own. Every process computes the same owner
// from the same broker ids.
package ring

import (
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Ring is an immutable set of brokers. The zero Ring has no brokers.
type Ring struct {
	ids    []string
	hashes []uint64
}

// New returns the ring of the given broker ids (order does not matter;
// duplicates are dropped).
func New(ids []string) *Ring {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	r := &Ring{ids: ids, hashes: make([]uint64, len(ids))}
	for i, id := range ids {
		r.hashes[i] = xxhash.Sum64String(id)
	}
	return r
}

// Len is the number of brokers.
func (r *Ring) Len() int {
	if r == nil {
		return 0
	}
	return len(r.ids)
}

// IDs returns the broker ids, sorted.
func (r *Ring) IDs() []string {
	if r == nil {
		return nil
	}
	return slices.Clone(r.ids)
}

// Has reports whether id is in the ring.
func (r *Ring) Has(id string) bool {
	if r == nil {
		return false
	}
	_, ok := slices.BinarySearch(r.ids, id)
	return ok
}

// Owner returns the broker that owns channel, or "" for an empty ring.
func (r *Ring) Owner(channel string) string {
	if r.Len() == 0 {
		return ""
	}
	hc := xxhash.Sum64String(channel)
	best, bestScore := 0, uint64(0)
	for i, hb := range r.hashes {
		if s := mix(hc ^ hb); i == 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return r.ids[best]
}

// mix is a 64-bit finaliser (splitmix64) so that nearby inputs score apart.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Equal reports whether two rings have the same brokers.
func Equal(a, b *Ring) bool {
	return slices.Equal(a.IDs(), b.IDs())
}
