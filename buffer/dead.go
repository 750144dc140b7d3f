package buffer

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// DeadLetterFilter selects dead letters. The zero value selects all.
type DeadLetterFilter struct {
	// IDs, when not empty, selects only these dead letters, each once
	// however often it is named.
	IDs []string
	// Target, when not empty, selects only dead letters of this target URL.
	Target string
	// TargetID, when not 0, selects only dead letters of this target.
	TargetID TargetID
	// Reason, when not empty, selects only dead letters with this reason.
	Reason string
}

func (f DeadLetterFilter) match(d *DeadLetter) bool {
	if f.Target != "" && d.Target != f.Target {
		return false
	}
	if f.TargetID != 0 && d.TargetID != f.TargetID {
		return false
	}
	if f.Reason != "" && d.Reason != f.Reason {
		return false
	}
	return true
}

// ListDeadLetters returns the dead letters selected by f, oldest first.
// With withHooks false the hooks are left out (Size and Bytes still say
// how many there were).
func (s *Store) ListDeadLetters(f DeadLetterFilter, withHooks bool) ([]DeadLetter, error) {
	var out []DeadLetter
	err := s.viewDeadLetters(f, true, func(d *DeadLetter) error {
		if !withHooks {
			d.Hooks = nil
		}
		out = append(out, *d)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	return out, nil
}

// DeadLetterHeads returns the dead letters selected by f, oldest first,
// with their fields alone (see readDeadLetter): no hooks, Size and Bytes
// 0. It is what selecting dead letters needs, a fraction of the work of
// ListDeadLetters.
func (s *Store) DeadLetterHeads(f DeadLetterFilter) ([]DeadLetter, error) {
	var out []DeadLetter
	err := s.viewDeadLetters(f, false, func(d *DeadLetter) error {
		out = append(out, *d)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	return out, nil
}

// viewDeadLetters calls fn with each dead letter selected by f, oldest
// first, in one read transaction, decoded whole or not (see
// readDeadLetter).
func (s *Store) viewDeadLetters(f DeadLetterFilter, whole bool, fn func(*DeadLetter) error) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	return s.db.View(func(txn *badger.Txn) error { return s.eachDeadLetter(txn, f, whole, fn) })
}

// GetDeadLetter returns one dead letter with its hooks.
func (s *Store) GetDeadLetter(id string) (DeadLetter, error) {
	ds, err := s.ListDeadLetters(DeadLetterFilter{IDs: []string{id}}, true)
	if err != nil {
		return DeadLetter{}, err
	}
	if len(ds) == 0 {
		return DeadLetter{}, fmt.Errorf("dead letter %s: %w", id, ErrNotFound)
	}
	return ds[0], nil
}

func (s *Store) eachDeadLetter(txn *badger.Txn, f DeadLetterFilter, whole bool, fn func(*DeadLetter) error) error {
	return s.eachDeadItem(txn, f.IDs, func(item *badger.Item) error {
		d, err := readDeadLetter(txn, item, whole)
		if err != nil || !f.match(&d) {
			return err
		}
		return fn(&d)
	})
}

// eachDeadItem calls fn with the item of each dead letter, oldest first,
// or of each of ids that is there, once: a purge that met one twice took
// it out of the totals twice, and a replay failed on it the second time.
func (s *Store) eachDeadItem(txn *badger.Txn, ids []string, fn func(*badger.Item) error) error {
	if len(ids) > 0 {
		seen := make(map[string]bool, len(ids))
		for _, id := range ids {
			if seen[id] {
				continue
			}
			seen[id] = true
			item, err := txn.Get(deadKey(id))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if err := fn(item); err != nil {
				return err
			}
		}
		return nil
	}
	// Values read one at a time: a dead letter may hold 16 MiB.
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixDead})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if s.closing.Load() {
			return ErrClosed
		}
		if err := fn(it.Item()); err != nil {
			return err
		}
	}
	return nil
}

// readDeadLetter reads the dead letter of item as of txn, without the
// hooks an interrupted replay put back. With whole false its hooks are
// left out, and Size and Bytes are 0: only its fields are decoded, a
// fraction of the work (see decodeDeadLetterHead).
func readDeadLetter(txn *badger.Txn, item *badger.Item, whole bool) (DeadLetter, error) {
	var d DeadLetter
	err := readRecord(item, func(v []byte) error {
		var err error
		if whole {
			err = decodeDeadLetter(v, &d)
		} else {
			err = decodeDeadLetterHead(v, &d)
		}
		if err != nil {
			return fmt.Errorf("decode dead letter: %w: %v", errCorrupt, err)
		}
		return nil
	})
	if unreadable(err) {
		// Damaged for good: listed by its id alone, so that it can be
		// purged, and every other dead letter still be listed, replayed
		// and purged.
		d = DeadLetter{ID: string(item.Key()[1:]), Reason: ReasonUnreadable, Detail: err.Error(), damaged: true}
	} else if err != nil {
		return DeadLetter{}, fmt.Errorf("read dead letter %s: %w", item.Key()[1:], err)
	}
	n, err := replayedOf(txn, d.ID)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("read dead letter %s: %w", d.ID, err)
	}
	d.Hooks, d.replayed = d.Hooks[min(n, len(d.Hooks)):], n
	d.Size = len(d.Hooks)
	for i := range d.Hooks {
		d.Bytes += d.Hooks[i].Size()
	}
	return d, nil
}

// DeadLetterPage returns the dead letters selected by f from the
// offset-th on, at most limit of them, oldest first, with their hooks
// but not their bodies (Size and Bytes still count them), and how many
// f selects in all. Only the page's dead letters are decoded whole: the
// others are read for their fields alone, and their hooks, most of a
// dead letter, are skipped, which makes a page of a large dead-letter
// store many times quicker than decoding them all.
func (s *Store) DeadLetterPage(f DeadLetterFilter, offset, limit int) (page []DeadLetter, total int, err error) {
	if err := s.enter(); err != nil {
		return nil, 0, err
	}
	defer s.closeMu.RUnlock()
	err = s.db.View(func(txn *badger.Txn) error {
		return s.eachDeadItem(txn, f.IDs, func(item *badger.Item) error {
			d, err := readDeadLetter(txn, item, false)
			if err != nil || !f.match(&d) {
				return err
			}
			if total >= offset && len(page) < limit {
				if d, err = readDeadLetter(txn, item, true); err != nil {
					return err
				}
				for i := range d.Hooks {
					d.Hooks[i].Body = nil
				}
				page = append(page, d)
			}
			total++
			return nil
		})
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list dead letters: %w", err)
	}
	return page, total, nil
}

// PurgeDeadLetters deletes the dead letters selected by f and returns the
// ids of those it deleted, in order. Replays and purges run one at a
// time: a dead letter replayed or purged before this one took its turn is
// not among them.
func (s *Store) PurgeDeadLetters(f DeadLetterFilter) ([]string, error) {
	s.lockDead()
	defer s.deadMu.Unlock()
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.closeMu.RUnlock()
	var (
		ids     []string
		keys    [][]byte
		totals  DeadTotals
		damaged bool
	)
	err := s.db.View(func(txn *badger.Txn) error {
		return s.eachDeadLetter(txn, f, true, func(d *DeadLetter) error {
			ids = append(ids, d.ID)
			keys = append(keys, deadKey(d.ID), replayedKey(d.ID))
			totals.add(letterTotals(d))
			damaged = damaged || d.damaged
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("purge dead letters: %w", err)
	}
	s.dead.begin()
	err = s.deleteKeys(keys)
	s.deletes.Add(1) // applied, or not known not to be
	if damaged && err == nil {
		// The totals may have counted a damaged dead letter before its
		// damage, with the hooks it held then, which a listing no
		// longer tells: they are counted again.
		s.dead.endUnknown()
	} else {
		s.dead.end(totals.neg(), err)
	}
	if err != nil {
		return nil, fmt.Errorf("purge dead letters: %w", err)
	}
	return ids, nil
}

// ReplayDeadLetters puts the hooks of the selected dead letters back at
// the tail of their target's queue, in their original order and with
// their original ids, deletes the dead letters, and returns the ids of
// the dead letters it replayed, in order, and how many hooks went back.
// Each dead letter moves in chunks of replayChunk hooks, one transaction
// each. Replays and purges run one at a time: a dead letter replayed or
// purged before this one took its turn is not replayed (nor counted).
// A dead letter with reason ReasonUnreadable has no bodies to send: it
// is never replayed (nor returned), and stays.
func (s *Store) ReplayDeadLetters(f DeadLetterFilter) (replayed []string, hooks int, err error) {
	s.lockDead()
	defer s.deadMu.Unlock()
	dead, err := s.DeadLetterHeads(f)
	if err != nil {
		return nil, 0, err
	}
	for i := range dead {
		if dead[i].Reason == ReasonUnreadable {
			continue
		}
		// One dead letter's hooks in memory at a time.
		d, err := s.GetDeadLetter(dead[i].ID)
		if err != nil {
			return replayed, hooks, fmt.Errorf("replay dead letter %s: %w", dead[i].ID, err)
		}
		if d.Reason == ReasonUnreadable {
			continue // its fields read, its hooks not
		}
		n, err := s.replay(&d)
		hooks += n
		if err != nil {
			return replayed, hooks, fmt.Errorf("replay dead letter %s: %w", d.ID, err)
		}
		replayed = append(replayed, d.ID)
	}
	return replayed, hooks, nil
}

// lockDead takes deadMu, counted in deadWaiting while it waits.
func (s *Store) lockDead() {
	s.deadWaiting.Add(1)
	s.deadMu.Lock()
	s.deadWaiting.Add(-1)
}

// replayChunk bounds how many hooks of a dead letter go back in one
// transaction (fewer when they would not fit in one); the same
// transaction records how many have gone back (replayedKey), so an
// interrupted replay neither loses nor repeats hooks. (Writing the rest
// of the letter again instead made a replay quadratic in its size.)
const replayChunk = 128

// replayedOf returns how many hooks of dead letter id a replay put back.
func replayedOf(txn *badger.Txn, id string) (int, error) {
	item, err := txn.Get(replayedKey(id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n uint64
	err = item.Value(func(v []byte) error {
		var k int
		if n, k = binary.Uvarint(v); k <= 0 {
			return errors.New("malformed replay count")
		}
		return nil
	})
	return int(n), err
}

func (s *Store) replay(d *DeadLetter) (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.closeMu.RUnlock()
	done := 0
	for done < len(d.Hooks) {
		// At most replayChunk hooks, and what a transaction holds.
		req := &putRequest{done: make(chan error, 1), keepIDs: true}
		end, inline := done, int64(0)
		var back DeadTotals // what leaves the dead letters
		for end < len(d.Hooks) && end-done < replayChunk {
			h := d.Hooks[end]
			c := inlineCost(&h)
			if end > done && inline+c > groupMaxInline/2 {
				break
			}
			inline += c
			req.hooks = append(req.hooks, &h)
			req.size += h.Size()
			back.Hooks++
			back.Bytes += h.Size()
			end++
		}
		last := end == len(d.Hooks)
		if last {
			back.Letters = 1
		}
		count := binary.AppendUvarint(nil, uint64(d.replayed+end))
		req.afterSize = int64(len(replayedKey(d.ID)) + len(count))
		req.after = func(txn *badger.Txn) error {
			if last {
				if err := txn.Delete(deadKey(d.ID)); err != nil {
					return err
				}
				return txn.Delete(replayedKey(d.ID))
			}
			return txn.Set(replayedKey(d.ID), count)
		}
		s.dead.begin()
		err := s.submit(req)
		if errors.Is(err, ErrQuota) || errors.Is(err, ErrDiskFull) {
			// Refused before its commit: nothing changed.
			s.dead.end(DeadTotals{}, nil)
		} else {
			s.dead.end(back.neg(), err)
			s.deletes.Add(1) // applied, or not known not to be
		}
		if err != nil {
			return done, err
		}
		done = end
	}
	return done, nil
}

// maxDeadLetterValue bounds one stored dead letter: Badger refuses a
// value larger than its value-log file (64 MiB), and a batch without a
// byte limit can hold far more (bodies are stored base64-encoded). A
// variable so that tests can split small batches.
var maxDeadLetterValue = 16 << 20

// deadPart is one stored dead letter: its id and its encoding.
type deadPart struct {
	id    string
	value []byte
}

// deadLetterParts encodes dl, split by its hooks into dead letters of at
// most maxDeadLetterValue where it is larger (a single hook is never
// split). The first part keeps dl's id (the batch id); part n (from 2)
// is "<id>-000n", so the parts list in order, right after the first.
func deadLetterParts(dl DeadLetter) ([]deadPart, error) {
	// Cut by an estimate of each hook's encoding (its record in base64,
	// quoted), then halve any part the estimate got wrong.
	var chunks [][]Hook
	start, size := 0, 0
	for i := range dl.Hooks {
		n := base64.StdEncoding.EncodedLen(recordLen(&dl.Hooks[i])) + 3
		if i > start && size+n > maxDeadLetterValue {
			chunks = append(chunks, dl.Hooks[start:i])
			start, size = i, 0
		}
		size += n
	}
	chunks = append(chunks, dl.Hooks[start:])

	var parts []deadPart
	var add func(hooks []Hook) error
	add = func(hooks []Hook) error {
		part := dl
		part.Hooks = hooks
		if len(parts) > 0 {
			part.ID = fmt.Sprintf("%s-%04d", dl.ID, len(parts)+1)
		}
		v, err := encodeDeadLetter(part)
		if err != nil {
			return err
		}
		if len(v) <= maxDeadLetterValue || len(hooks) == 1 {
			parts = append(parts, deadPart{id: part.ID, value: v})
			return nil
		}
		half := len(hooks) / 2
		if err := add(hooks[:half]); err != nil {
			return err
		}
		return add(hooks[half:])
	}
	for _, c := range chunks {
		if err := add(c); err != nil {
			return nil, err
		}
	}
	return parts, nil
}

// storedDeadLetter is a dead letter as stored: its hooks as hook records
// (encodeHook, base64 in JSON). As JSON strings, a target URL or a header
// value with bytes that are not UTF-8 (a raw byte in a query, a Latin-1
// header value from python's http.client) would come back with U+FFFD in
// their place, and a replay would put back other hooks than were
// captured, for another target. Dead letters stored with their hooks as
// JSON (Hooks) are still read.
type storedDeadLetter struct {
	DeadLetter
	Records [][]byte `json:"records,omitempty"`
}

func encodeDeadLetter(d DeadLetter) ([]byte, error) {
	sd := storedDeadLetter{DeadLetter: d, Records: make([][]byte, 0, len(d.Hooks))}
	sd.Hooks = nil
	for i := range d.Hooks {
		sd.Records = append(sd.Records, encodeHook(&d.Hooks[i]))
	}
	return json.Marshal(sd)
}

// decodeDeadLetterHead decodes the fields of a dead letter stored by
// encodeDeadLetter, and its exact target from its first hook, but not
// its hooks. A dead letter stored with its hooks as JSON (Hooks) is
// decoded whole.
func decodeDeadLetterHead(v []byte, d *DeadLetter) error {
	dec := json.NewDecoder(bytes.NewReader(v))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("not a JSON object (%v)", err)
	}
	// end is where the last field read ends: the fields before records
	// are decoded as an object of their own.
	end := dec.InputOffset()
	head := func() error {
		return json.Unmarshal(append(v[:end:end], '}'), d)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		switch t {
		case "records":
			if t, err := dec.Token(); err != nil || t != json.Delim('[') {
				return fmt.Errorf("records: not an array (%v)", err)
			}
			if err := head(); err != nil {
				return err
			}
			if !dec.More() {
				return nil
			}
			var first []byte
			if err := dec.Decode(&first); err != nil {
				return err
			}
			h, err := decodeHook(first)
			if err != nil {
				return err
			}
			d.Target = h.Target // the exact URL, which the JSON string may not be
			return nil
		case "Hooks":
			var hooks json.RawMessage
			if err := dec.Decode(&hooks); err != nil {
				return err
			}
			if string(hooks) != "null" {
				return decodeDeadLetter(v, d)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return err
			}
		}
		end = dec.InputOffset()
	}
	return head()
}

func decodeDeadLetter(v []byte, d *DeadLetter) error {
	var sd storedDeadLetter
	if err := json.Unmarshal(v, &sd); err != nil {
		return err
	}
	*d = sd.DeadLetter
	if len(sd.Records) == 0 {
		return nil
	}
	d.Hooks = make([]Hook, 0, len(sd.Records))
	for _, r := range sd.Records {
		h, err := decodeHook(r)
		if err != nil {
			return err
		}
		d.Hooks = append(d.Hooks, h)
	}
	d.Target = d.Hooks[0].Target // the exact URL, which the JSON string may not be
	return nil
}
