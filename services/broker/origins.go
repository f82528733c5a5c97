package broker

// origin is who a delivery is owed to: the publish it came from (its link
// and sequence number) and its size in the link's byte count.
type origin struct {
	from *link
	seq  uint64
	size int
}

// origins is a link's deliveries awaiting the worker's confirmation,
// oldest first, in a ring: confirmations take from the front while
// deliveries join at the back, and a slice cut from its front would be
// copied into a new array at every growth.
type origins struct {
	buf  []origin
	head int
	n    int
}

func (q *origins) len() int { return q.n }

func (q *origins) push(o origin) {
	if q.n == len(q.buf) {
		buf := make([]origin, max(64, 2*len(q.buf)))
		for i := 0; i < q.n; i++ {
			buf[i] = q.buf[(q.head+i)%len(q.buf)]
		}
		q.buf, q.head = buf, 0
	}
	q.buf[(q.head+q.n)%len(q.buf)] = o
	q.n++
}

// pop removes the k oldest (k <= len) and returns their total size.
func (q *origins) pop(k int) (size int) {
	for i := 0; i < k; i++ {
		j := (q.head + i) % len(q.buf)
		size += q.buf[j].size
		q.buf[j] = origin{} // no pointer kept to the publisher's link
	}
	q.head, q.n = (q.head+k)%max(len(q.buf), 1), q.n-k
	if q.n == 0 && len(q.buf) > 4096 {
		q.buf, q.head = nil, 0 // a burst's array goes back
	}
	return size
}

// take empties the queue and returns what it held, oldest first.
func (q *origins) take() []origin {
	out := make([]origin, q.n)
	for i := range out {
		out[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	*q = origins{}
	return out
}
