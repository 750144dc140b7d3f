package buffer

import (
	"sync"

	badger "github.com/dgraph-io/badger/v4"
)

// sequence is a badger.Sequence that survives a failed lease. Badger's
// Sequence sets its new lease in memory inside the transaction that
// writes it, before the commit: when the commit fails (writes blocked
// by a DropPrefix, an I/O error), it goes on handing out the numbers of
// a lease that is not on disk, and its next lease, read from disk, hands
// them out again. A hook given the sequence of one already delivered
// sorts below its target's head: no claim sees it, and the next start
// deletes it as delivered. So a sequence whose lease failed is dropped
// (its numbers are a gap) and leased anew from disk.
type sequence struct {
	db        *badger.DB
	key       []byte
	bandwidth uint64

	mu  sync.Mutex
	seq *badger.Sequence // nil after a failed lease
}

func newSequence(db *badger.DB, key []byte, bandwidth uint64) (*sequence, error) {
	q := &sequence{db: db, key: key, bandwidth: bandwidth}
	if _, err := q.lease(); err != nil {
		return nil, err
	}
	return q, nil
}

// lease returns the Badger sequence, leasing one when there is none.
// Called with q.mu held, or before q is shared.
func (q *sequence) lease() (*badger.Sequence, error) {
	if q.seq == nil {
		seq, err := q.db.GetSequence(q.key, q.bandwidth)
		if err != nil {
			return nil, err
		}
		q.seq = seq
	}
	return q.seq, nil
}

// Next returns the next number of the sequence.
func (q *sequence) Next() (uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	seq, err := q.lease()
	if err != nil {
		return 0, err
	}
	n, err := seq.Next()
	if err != nil {
		q.seq = nil
		return 0, err
	}
	return n, nil
}

// Release gives back the numbers leased and not handed out.
func (q *sequence) Release() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.seq == nil {
		return nil
	}
	return q.seq.Release()
}
