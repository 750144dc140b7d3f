package buffer

import "sync"

// DeadTotals are the dead-letter store's figures: how many dead letters
// there are, how many hooks they still hold (a replay that stopped part
// way put some back already) and those hooks' body bytes.
type DeadTotals struct {
	Letters int
	Hooks   int
	Bytes   int64
}

func (t *DeadTotals) add(u DeadTotals) {
	t.Letters += u.Letters
	t.Hooks += u.Hooks
	t.Bytes += u.Bytes
}

func (t DeadTotals) neg() DeadTotals { return DeadTotals{-t.Letters, -t.Hooks, -t.Bytes} }

// letterTotals are the figures of one dead letter as a listing has it.
func letterTotals(d *DeadLetter) DeadTotals {
	return DeadTotals{Letters: 1, Hooks: d.Size, Bytes: d.Bytes}
}

// storedTotals are the figures of a dead letter about to be stored
// whole: those a listing will give it.
func storedTotals(d *DeadLetter) DeadTotals {
	t := DeadTotals{Letters: 1, Hooks: len(d.Hooks)}
	for i := range d.Hooks {
		t.Bytes += d.Hooks[i].Size()
	}
	return t
}

// deadCounter keeps the dead-letter totals so that reading them costs
// nothing: counting them reads every dead letter whole (about 15 s per
// GB of bodies), too slow for every metrics scrape. They are counted
// once, when first asked for, and every change of the dead letters adds
// its own figures after it commits. A count reads a snapshot of the store
// and takes the changes committed after the snapshot from the changes
// themselves: change is held shared by a change from before its commit
// until its figures are added, and exclusively while the snapshot is
// taken, so each change is in the snapshot or in delta, never both or
// neither. A change whose outcome is not known (its commit failed) makes
// the totals unknown: the next read counts them again.
type deadCounter struct {
	change sync.RWMutex
	// counting serialises counts.
	counting sync.Mutex

	mu     sync.Mutex
	known  bool
	totals DeadTotals
	// During a count: inCount is set, delta sums the changes since its
	// snapshot and lost says one of them had an unknown outcome.
	inCount bool
	delta   DeadTotals
	lost    bool
	// counts is how many counts read the dead letters.
	counts int
}

// afterDeadSnapshot is called when a count has taken its snapshot, before
// it reads it: tests change the dead letters there.
var afterDeadSnapshot = func() {}

// begin starts a change of the dead letters; call end with its figures
// once its commit returns.
func (c *deadCounter) begin() { c.change.RLock() }

// end ends a change begun with begin, whose commit returned err: d is
// what it changed. After a failed commit whether anything was applied is
// not known (Badger applies a transaction whose sync fails), so the
// totals are counted again.
func (c *deadCounter) end(d DeadTotals, err error) {
	if err != nil {
		c.endUnknown()
		return
	}
	defer c.change.RUnlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.totals.add(d)
	c.delta.add(d)
}

// endUnknown ends a change begun with begin whose figures are not known:
// the totals are counted again.
func (c *deadCounter) endUnknown() {
	defer c.change.RUnlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.known = false
	c.lost = c.lost || c.inCount
}

// knownBytes is the dead letters' body bytes when the totals are known
// (they are counted in the background after a start), 0 otherwise.
func (c *deadCounter) knownBytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.known {
		return 0
	}
	return c.totals.Bytes
}

// DeadLetterTotals returns the dead-letter store's figures. The first
// call after Open (and the first after a change whose outcome was not
// known) reads every dead letter; every other returns at once. Damage to
// a dead letter's record after it was counted is not seen: the totals
// count it as it was written until the next start, or until it is purged
// (which has them counted again).
func (s *Store) DeadLetterTotals() (DeadTotals, error) {
	c := &s.dead
	c.counting.Lock()
	defer c.counting.Unlock()
	c.mu.Lock()
	if c.known {
		t := c.totals
		c.mu.Unlock()
		return t, nil
	}
	c.mu.Unlock()
	if err := s.enter(); err != nil {
		return DeadTotals{}, err
	}
	defer s.closeMu.RUnlock()

	c.change.Lock()
	txn := s.db.NewTransaction(false)
	c.mu.Lock()
	c.inCount, c.delta, c.lost = true, DeadTotals{}, false
	c.mu.Unlock()
	c.change.Unlock()
	defer txn.Discard()
	afterDeadSnapshot()

	var t DeadTotals
	err := s.eachDeadLetter(txn, DeadLetterFilter{}, true, func(d *DeadLetter) error {
		t.add(letterTotals(d))
		return nil
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	t.add(c.delta)
	c.inCount = false
	c.counts++
	if err != nil {
		return DeadTotals{}, err
	}
	if !c.lost {
		c.known, c.totals = true, t
	}
	return t, nil
}
