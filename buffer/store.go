package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Options configures a Store. The zero value of every field but Dir is a
// sensible default.
type Options struct {
	// Dir is the data directory; required unless InMemory.
	Dir string
	// InMemory keeps everything in memory (tests of pure logic only: it
	// is not durable).
	InMemory bool
	// MaxPendingBytes bounds the body bytes of hooks not yet delivered;
	// Put returns ErrQuota past it. Zero means no bound.
	MaxPendingBytes int64
	// GCInterval is how often the value log is garbage-collected.
	// Zero means one minute; negative disables it.
	GCInterval time.Duration
	// Logger receives the store's and Badger's messages; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MinFreeBytes is the free space the file system of Dir must keep
	// beyond the size of Badger's tables (a compaction needs room for
	// what it rewrites; see lsmBytes): Put refuses a hook whose records
	// would take the free space below that with ErrDiskFull (and Check
	// reports it while the disk is short) instead of writing. Badger writes through memory-mapped files
	// that it creates sparse, so on a full disk a write does not fail:
	// the kernel kills the process with SIGBUS, and a restart on the
	// still-full disk dies the same way. Refusing captures early leaves
	// room for the sender's acknowledgements and Badger's flushes, which
	// give the space back. Zero: no check.
	MinFreeBytes int64
	// FreeBytes reports the free space of the file system of dir (for
	// tests); nil means statfs.
	FreeBytes func(dir string) (int64, error)
	// LSMBytes reports the size of Badger's tables, which the reserve
	// grows by (compactions need that much room while they run); for
	// tests, nil means Badger's own figure.
	LSMBytes func() int64
	// OnGivenUp, when set, is called after the store itself moved hooks
	// to the dead-letter store, with the reason (ReasonUnreadable) and
	// how many hooks the dead letter holds (one); it must not block. It
	// has the signature of the sender's hook of that name. Nil: not
	// reported.
	OnGivenUp func(reason string, hooks int)
}

// Group commit bounds: one Badger transaction holds at most this many
// hooks and this many bytes stored inline: keys and records, headers
// included (an 8 MiB memtable refuses transactions above ~1.2 MB with
// ErrTxnTooBig).
const (
	groupMaxHooks  = 512
	groupMaxInline = 768 << 10
	valueThreshold = 64 << 10
)

// inlineCost bounds what storing h adds to a transaction: its key and,
// below the value threshold, its record (above it, a value-log pointer),
// plus the target's two records when it is new.
func inlineCost(h *Hook) int64 {
	const overhead = 16 // entry meta, a value pointer's size bound
	n := int64(queueKeyLength + overhead)
	if rec := recordLen(h); rec >= valueThreshold {
		n += overhead
	} else {
		n += int64(rec)
	}
	return n + 2*int64(len(h.Target)) + 64
}

// Store is the durable buffer. All methods are safe for concurrent use.
type Store struct {
	db   *badger.DB
	opts Options
	log  *slog.Logger
	now  func() time.Time
	node uint32
	// lastIDMillis is the time part of the newest id made, in Unix
	// milliseconds (see idTime).
	lastIDMillis atomic.Int64

	hookSeq, batchSeq, targetSeq *sequence

	// vlogSyncFailures counts the failed syncs of the value log, which
	// Badger only logs (see badgerLogger).
	vlogSyncFailures *atomic.Uint64

	// closeMu is held shared by every operation and exclusively by Close,
	// so Close waits for operations in progress.
	closeMu sync.RWMutex
	closed  bool
	// closing is set when Close begins: a listing of every dead letter,
	// which may take long, stops rather than hold Close up.
	closing atomic.Bool

	// recMu serialises the read-modify-write of target records (finish
	// and SetGone), so neither writes back a stale head or gone mark.
	recMu sync.Mutex

	// deadMu serialises the operations that rewrite or delete dead
	// letters (replay and purge), so that neither works from a copy the
	// other has changed; deadWaiting counts the callers waiting for it.
	deadMu      sync.Mutex
	deadWaiting atomic.Int32
	// dead keeps the dead-letter totals.
	dead deadCounter

	// reclaiming is set while a Flatten that gives back the space of
	// deleted hooks runs; lastReclaim is when the last one started, in
	// nanoseconds since monoStart (0: none yet). See maybeReclaim.
	reclaiming  atomic.Bool
	lastReclaim atomic.Int64
	// deletes counts the writes that deleted hooks or dead letters
	// (after their commit); reclaimedDeletes is what it was when the last
	// reclaim that ran to its end started, -1 before any.
	deletes          atomic.Int64
	reclaimedDeletes atomic.Int64
	// flushing is held by flushMemtable while Badger blocks writes, and
	// shared by group commits, which wait for it rather than fail.
	flushing sync.RWMutex

	mu           sync.Mutex
	targets      map[TargetID]*target
	byURL        map[string]*target
	pendingBytes int64
	notify       func(TargetStatus)
	// dirInfo is the data directory as Open found it (nil in memory):
	// see dirMoved.
	dirInfo os.FileInfo
	// commitErr is the error of the last hook commit, nil after a success.
	commitErr error
	// forgotten holds the targets forgotten while running (see
	// forgetLocked) whose records are still to be deleted: the next
	// batch to end deletes them in its own write.
	forgotten []*target

	// Group commit: the first Put to find no commit in progress leads; it
	// commits everything queued (bounded), answers each waiter, then hands
	// leadership to the first request that queued meanwhile.
	gcMu       sync.Mutex
	queue      []*putRequest
	committing bool

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// target is the in-memory index of one target, derived from disk.
type target struct {
	id       TargetID
	url      string
	head     uint64 // first sequence not yet acknowledged
	count    int
	bytes    int64
	oldest   time.Time
	inflight *flightRecord
	gone     bool
	version  uint64
	// pins counts the group commits writing hooks to the target: it is
	// not forgotten meanwhile, as their hooks go under its id.
	pins int
	// leftover is set when delivered hooks of the target could not be
	// deleted: below its head, they are deleted by the next start, which
	// needs its record, so it is not forgotten before.
	leftover bool
}

type targetRecord struct {
	URL string `json:"url"`
	// RawURL holds the URL's bytes when they are not UTF-8 (a raw byte in
	// a query is taken by Go's server): encoding/json writes such bytes in
	// URL as U+FFFD, and the target would come back from a restart with
	// another URL.
	RawURL []byte `json:"raw_url,omitempty"`
	Head   uint64 `json:"head"`
	Gone   bool   `json:"gone,omitempty"`
}

// MarshalJSON implements json.Marshaler: it fills RawURL when URL is not
// UTF-8. (plain has the fields without the methods, so that Marshal does
// not call this again.)
func (r targetRecord) MarshalJSON() ([]byte, error) {
	type plain targetRecord
	if !utf8.ValidString(r.URL) {
		r.RawURL = []byte(r.URL)
	}
	return json.Marshal(plain(r))
}

// UnmarshalJSON implements json.Unmarshaler: RawURL, when there, is the
// URL.
func (r *targetRecord) UnmarshalJSON(b []byte) error {
	type plain targetRecord
	if err := json.Unmarshal(b, (*plain)(r)); err != nil {
		return err
	}
	if r.RawURL != nil {
		r.URL, r.RawURL = string(r.RawURL), nil
	}
	return nil
}

type flightRecord struct {
	ID           string    `json:"id"`
	Created      time.Time `json:"created"`
	Attempts     int       `json:"attempts"`
	FirstAttempt time.Time `json:"first_attempt"`
	LastAttempt  time.Time `json:"last_attempt"`
	LastStatus   int       `json:"last_status"`
	LastError    string    `json:"last_error"`
	NextAttempt  time.Time `json:"next_attempt"`
	Keys         [][]byte  `json:"keys"`
	Bytes        int64     `json:"bytes"`
	Cut          bool      `json:"cut,omitempty"`
	// resumed: found in flight at Open (see Batch.Resumed); never stored.
	resumed bool
}

func (f *flightRecord) lastSeq() uint64 {
	k, _ := parseQueueKey(f.Keys[len(f.Keys)-1])
	return k.seq
}

// putRequest is one unit of the group commit: the hooks of one capture,
// or a chunk of a dead letter being replayed.
type putRequest struct {
	hooks []*Hook
	size  int64
	// keepIDs keeps the hooks' ids (a replay) instead of assigning new ones.
	keepIDs bool
	// after, when set, adds its own writes to the transaction; afterSize
	// is about what they write, for the free-space check.
	after     func(*badger.Txn) error
	afterSize int64
	done      chan error // buffered; errLead hands over leadership
}

// diskSize is about what storing r writes: its hooks' records and queue
// keys, and what after adds.
func (r *putRequest) diskSize() int64 {
	n := r.afterSize
	for _, h := range r.hooks {
		n += int64(recordLen(h) + queueKeyLength)
	}
	return n
}

var errLead = errors.New("lead the next group commit")

// Open opens (or creates) the store in opts.Dir and rebuilds the
// in-memory index of targets from disk.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" && !opts.InMemory {
		return nil, errors.New("open store: no directory")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	vlogSyncFailures := new(atomic.Uint64)
	bopts := badger.DefaultOptions(opts.Dir).
		WithInMemory(opts.InMemory).
		WithSyncWrites(true).
		WithLogger(badgerLogger{l: log, vlogSyncFailures: vlogSyncFailures}).
		// Sized for a sidecar: small memtables and caches keep the idle
		// footprint low; see the README's "Storage and memory" section.
		WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithBaseTableSize(2 << 20).
		WithBaseLevelSize(8 << 20).
		WithNumCompactors(2).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(8 << 20).
		WithValueThreshold(valueThreshold).
		// A damaged body in the value log fails its read (and its hook
		// goes to the dead-letter store, see unreadable) instead of
		// being delivered as it reads; one CRC per body of 64 KiB and more.
		WithVerifyValueChecksum(true).
		WithValueLogFileSize(valueLogFileSize).
		WithMetricsEnabled(false).
		// Writes of hooks are serialised by the group commit and target
		// records by recMu, so Badger's conflict tracking is pure cost.
		WithDetectConflicts(false).
		// Compressing tables costs CPU in compactions that competes with
		// captures on a small sidecar; disk is the cheaper resource.
		WithCompression(options.None)
	if opts.InMemory {
		bopts.Dir, bopts.ValueDir = "", ""
	}
	if !opts.InMemory {
		if err := checkManifest(opts.Dir); err != nil {
			return nil, fmt.Errorf("open store %s: %w", opts.Dir, err)
		}
		if err := cleanUp(opts.Dir, bopts, log); err != nil {
			return nil, fmt.Errorf("open store %s: %w", opts.Dir, err)
		}
	}
	db, err := badger.Open(bopts)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", opts.Dir, err)
	}
	s := &Store{
		db:      db,
		opts:    opts,
		log:     log,
		now:     now,
		targets: make(map[TargetID]*target),
		byURL:   make(map[string]*target),

		vlogSyncFailures: vlogSyncFailures,
	}
	s.reclaimedDeletes.Store(-1)
	if !opts.InMemory {
		// Badger holds its files open: it would go on writing them
		// after the directory was removed or replaced, and each hook
		// acknowledged then would be gone at the next start.
		if s.dirInfo, err = os.Stat(opts.Dir); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("open store %s: %w", opts.Dir, err)
		}
	}
	if err := s.init(); err != nil {
		s.releaseSequences()
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", opts.Dir, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if !opts.InMemory && opts.GCInterval >= 0 {
		interval := opts.GCInterval
		if interval == 0 {
			interval = time.Minute
		}
		s.wg.Add(1)
		go s.gcLoop(ctx, interval)
	}
	return s, nil
}

// cleanUp removes what a crash left in dir that Badger cannot open or
// would write before it removes: empty memtable files and orphan
// tables. Only under Badger's directory lock: a running hookproxy's
// files look the same (the memtable file it is creating is empty for a
// moment, the tables it is writing are not in its MANIFEST yet). Where
// the lock cannot be taken here at all, the empty memtables still go,
// as Badger would not open the directory with them.
func cleanUp(dir string, bopts badger.Options, log *slog.Logger) error {
	unlock, err := lockDir(dir)
	locked := err == nil
	if !locked && !errors.Is(err, errors.ErrUnsupported) {
		return nil // held by another process (Badger's open says so), or no directory yet
	}
	if locked {
		defer unlock()
	}
	n, err := removeEmptyMemtables(dir)
	if err != nil {
		return err
	}
	if n > 0 {
		log.Warn("removed empty memtable files left by a crash", "count", n)
	}
	if !locked {
		return nil
	}
	n, freed, err := removeOrphanTables(dir, bopts)
	if err != nil {
		return err
	}
	if n > 0 {
		log.Warn("removed table files a crash left unfinished", "count", n, "bytes", freed)
	}
	return nil
}

// removeEmptyMemtables deletes memtable files of size zero. Badger creates
// a memtable file and only then writes its header; a crash in between
// leaves an empty file, and Badger then refuses to open the directory
// ("while opening memtables ... Create a new file", dgraph-io/badger#2207;
// seen here after SIGKILL). An empty file holds no entry.
func removeEmptyMemtables(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read dir: %w", err)
	}
	n := 0
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".mem") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return n, fmt.Errorf("stat %s: %w", e.Name(), err)
		}
		if info.Size() != 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return n, fmt.Errorf("remove empty memtable %s: %w", e.Name(), err)
		}
		n++
	}
	return n, nil
}

func (s *Store) init() error {
	if err := s.checkFormat(); err != nil {
		return err
	}
	err := s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(keyNode)
		if errors.Is(err, badger.ErrKeyNotFound) {
			node, err := randomNode()
			if err != nil {
				return err
			}
			s.node = node
			return txn.Set(keyNode, binary.BigEndian.AppendUint32(nil, node))
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) != 4 {
				return fmt.Errorf("node id: %w", errCorrupt)
			}
			s.node = binary.BigEndian.Uint32(v)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("read node id: %w", err)
	}
	for _, q := range []struct {
		key *[]byte
		seq **sequence
		bw  uint64
	}{{&keySeqHook, &s.hookSeq, hookSeqBandwidth}, {&keySeqBatch, &s.batchSeq, 100}, {&keySeqTarget, &s.targetSeq, 100}} {
		seq, err := newSequence(s.db, *q.key, q.bw)
		if err != nil {
			return fmt.Errorf("get sequence %s: %w", *q.key, err)
		}
		*q.seq = seq
	}
	return s.rebuild()
}

// checkFormat refuses a store of a later format than storeFormat, and
// marks one of an earlier format, or without a mark (new, or of a
// version before the mark), as of storeFormat: this version writes its
// records there from now on, which the versions of the earlier format
// do not read, so they must refuse the store as well.
func (s *Store) checkFormat() error {
	return s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(keyFormat)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return txn.Set(keyFormat, binary.AppendUvarint(nil, storeFormat))
		}
		if err != nil {
			return fmt.Errorf("read store format: %w", err)
		}
		var f uint64
		if err := item.Value(func(v []byte) error {
			var n int
			if f, n = binary.Uvarint(v); n <= 0 {
				return fmt.Errorf("store format: %w", errCorrupt)
			}
			return nil
		}); err != nil {
			return err
		}
		switch {
		case f > storeFormat:
			return fmt.Errorf("%w (format %d; this one reads format %d): run that version, or one as new", errNewerStore, f, storeFormat)
		case f < storeFormat:
			return txn.Set(keyFormat, binary.AppendUvarint(nil, storeFormat))
		}
		return nil
	})
}

// rebuild loads every target record, its in-flight batch, and the counts
// of its queue (from a key-only scan that starts at the head), and deletes
// queue keys below the head that a crash between an acknowledgement and
// its clean-up left behind.
func (s *Store) rebuild() error {
	var garbage [][]byte
	now := s.now()
	// The newest id time on disk, so that ids made from now on sort
	// after the stored ones even when the wall clock stepped back while
	// hookproxy was stopped (see idTime).
	var lastID int64
	seen := func(ms int64) { lastID = max(lastID, ms) }
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixTarget, PrefetchValues: true, PrefetchSize: 100})
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			id := TargetID(binary.BigEndian.Uint64(item.Key()[1:]))
			var rec targetRecord
			if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &rec) }); err != nil {
				it.Close()
				return fmt.Errorf("decode target %d: %w", id, err)
			}
			t := &target{id: id, url: rec.URL, head: rec.Head, gone: rec.Gone}
			s.targets[id] = t
			// In id order: of two records of one URL (a forget whose
			// deletion failed leaves one), the later is the URL's
			// target, and the earlier has nothing pending.
			s.byURL[t.url] = t
		}
		it.Close()

		// One pass over each kind of key, in key order, rather than a
		// lookup and a seek per target: with many targets the seeks, each
		// across every table, dominated start-up.
		it = txn.NewIterator(badger.IteratorOptions{Prefix: prefixFlight, PrefetchValues: true, PrefetchSize: 16})
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			id := TargetID(binary.BigEndian.Uint64(item.Key()[1:]))
			t := s.targets[id]
			if t == nil {
				continue // a record of a target that has none: nothing refers to it
			}
			var fr flightRecord
			if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &fr) }); err != nil {
				it.Close()
				return fmt.Errorf("decode in-flight batch of target %d: %w", id, err)
			}
			if ms, ok := idTimeMillis(fr.ID); ok {
				seen(ms)
			}
			fr.onClock(now)
			fr.resumed = true
			t.inflight = &fr
		}
		it.Close()

		// Dead letters are listed and replayed in id order: the last
		// one's id is the newest.
		it = txn.NewIterator(badger.IteratorOptions{Prefix: prefixDead, Reverse: true})
		if it.Seek([]byte{kindDead, 0xff}); it.Valid() {
			if ms, ok := idTimeMillis(string(it.Item().Key()[1:])); ok {
				seen(ms)
			}
		}
		it.Close()

		it = txn.NewIterator(badger.IteratorOptions{Prefix: prefixQueue})
		defer it.Close()
		var t *target
		for it.Rewind(); it.Valid(); it.Next() {
			k, err := parseQueueKey(it.Item().Key())
			if err != nil {
				return err
			}
			seen(k.received.UnixMilli())
			if t == nil || t.id != k.target {
				if t = s.targets[k.target]; t == nil {
					continue // no target record: never counted, as before
				}
			}
			if k.seq < t.head {
				garbage = append(garbage, it.Item().KeyCopy(nil))
				continue
			}
			if t.count == 0 {
				t.oldest = onClock(k.received, now)
			}
			t.count++
			t.bytes += k.size
			s.pendingBytes += k.size
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.lastIDMillis.Store(lastID)
	if len(garbage) > 0 {
		if err := s.deleteKeys(garbage); err != nil {
			return fmt.Errorf("delete acknowledged keys: %w", err)
		}
		s.log.Info("deleted acknowledged hooks left by an interrupted clean-up", "count", len(garbage))
	}
	s.forgetIdle()
	return nil
}

// forgetIdle deletes the records of the targets that have nothing
// pending, no batch in flight and no gone mark. Subscriptions come and
// go, and the URL of every one ever posted to would otherwise stay in
// memory and be read at every start. A capture for a forgotten URL
// makes its target again, under a new id; dead letters keep the URL and
// the id they had.
func (s *Store) forgetIdle() {
	var idle []*target
	var keys [][]byte
	for _, t := range s.targets {
		if t.idle() {
			idle = append(idle, t)
			keys = append(keys, t.recordKeys()...)
		}
	}
	// A clean-up: on a disk short of its reserve it waits for a later
	// start.
	if len(keys) == 0 || s.checkFree() != nil {
		return
	}
	// Forgotten in memory even when the deletion fails: Badger commits a
	// large write batch in several transactions, so a failure may have
	// deleted some of the records, and a target kept in memory without
	// its record would take hooks that no restart sees. A record left
	// behind is harmless: a later capture makes a target of its own, and
	// the next start forgets the old one again.
	for _, t := range idle {
		s.drop(t)
	}
	if err := forgetKeys(s, keys); err != nil {
		s.log.Warn("could not delete the records of forgotten targets; the next start deletes them", "count", len(idle), "error", err)
		return
	}
	s.log.Info("forgot targets with nothing pending", "count", len(idle))
}

// commitTxn commits the transactions of captures and of a batch's end;
// a variable so that tests can make it fail as a failed sync does, after
// Badger has applied the writes.
var commitTxn = (*badger.Txn).Commit

// valueLogFileSize is the size at which Badger starts a new value log
// file; a variable so that tests can fill several with a few MiB.
var valueLogFileSize int64 = 64 << 20

// hookSeqBandwidth is how many hook sequences one lease takes; a
// variable so that tests can reach the next lease quickly.
var hookSeqBandwidth uint64 = 1000

// forgetKeys deletes the records of forgotten targets; a variable so that
// tests can make it fail part way.
var forgetKeys = (*Store).deleteKeys

func (s *Store) deleteKeys(keys [][]byte) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range keys {
		if err := wb.Delete(k); err != nil {
			return err
		}
	}
	return wb.Flush()
}

func (s *Store) gcLoop(ctx context.Context, interval time.Duration) {
	defer s.wg.Done()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			// One file a call; a Close waits for the call in progress
			// only.
			for !s.closing.Load() && s.db.RunValueLogGC(0.5) == nil {
			}
		}
	}
}

func (s *Store) releaseSequences() {
	for _, seq := range []*sequence{s.hookSeq, s.batchSeq, s.targetSeq} {
		if seq != nil {
			_ = seq.Release()
		}
	}
}

// Close waits for operations in progress, stops background work and
// closes Badger. Every method returns ErrClosed afterwards.
func (s *Store) Close() error {
	s.closing.Store(true)
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.cancel()
	s.wg.Wait()
	s.releaseSequences()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// enter takes the shared close lock; the caller must call s.closeMu.RUnlock.
func (s *Store) enter() error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	return nil
}

// SetNotify registers fn to be called after every change of a target's
// pending hooks made by Put or a replay, with the target's new status.
// fn must not block; it is called without the store's locks held. Call it
// before the first Put.
func (s *Store) SetNotify(fn func(TargetStatus)) {
	s.mu.Lock()
	s.notify = fn
	s.mu.Unlock()
}

// Put makes h durable: when it returns nil, h is committed and synced to
// disk, and h.ID (and h.Received, when it was zero) are set. Puts that
// arrive together share one commit and one sync.
func (s *Store) Put(ctx context.Context, h *Hook) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if h.Target == "" {
		return errors.New("put hook: no target")
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	if h.Received.IsZero() {
		h.Received = s.now()
	}
	return s.submit(&putRequest{hooks: []*Hook{h}, size: h.Size(), done: make(chan error, 1)})
}

// submit queues req for the group commit and returns its result. The
// caller holds the shared close lock.
func (s *Store) submit(req *putRequest) error {
	s.gcMu.Lock()
	s.queue = append(s.queue, req)
	if s.committing {
		s.gcMu.Unlock()
		if err := <-req.done; err != errLead {
			return err
		}
		s.gcMu.Lock()
	}
	s.committing = true
	group := s.takeGroup()
	s.gcMu.Unlock()

	s.commitGroup(group)

	s.gcMu.Lock()
	if len(s.queue) > 0 {
		next := s.queue[0]
		s.gcMu.Unlock()
		next.done <- errLead
	} else {
		s.committing = false
		s.gcMu.Unlock()
	}
	return <-req.done
}

// takeGroup removes from the queue what one transaction can hold. Called
// with gcMu held.
func (s *Store) takeGroup() []*putRequest {
	n, inline := 0, int64(0)
	hooks := 0
	for n < len(s.queue) {
		r := s.queue[n]
		var size int64
		for _, h := range r.hooks {
			size += inlineCost(h)
		}
		if n > 0 && (inline+size > groupMaxInline || hooks+len(r.hooks) > groupMaxHooks) {
			break
		}
		inline += size
		hooks += len(r.hooks)
		n++
	}
	group := make([]*putRequest, n)
	copy(group, s.queue)
	// The slots left behind are cleared: the queue's array outlives
	// the requests, and a request holds its hooks' bodies (a burst of
	// large captures would otherwise stay in memory until as many
	// captures queue again).
	rest := copy(s.queue, s.queue[n:])
	clear(s.queue[rest:])
	s.queue = s.queue[:rest]
	return group
}

// commitGroup writes every request of the group in one transaction and
// answers each one. Only one commitGroup runs at a time, so hook
// sequences are committed in increasing order: a claim that sees a hook
// has already seen every hook before it.
func (s *Store) commitGroup(group []*putRequest) {
	if err := s.dirMoved(); err != nil {
		s.mu.Lock()
		s.commitErr = err
		s.mu.Unlock()
		for _, r := range group {
			r.done <- err
		}
		return
	}
	// Free space and quota: admit in arrival order while the space above
	// the reserve and the pending bytes allow. The group's own records
	// count against the reserve: a group that fits only by eating into
	// it would leave the room the reserve is for taken.
	spare := s.spareSpace()
	var used int64 // of the space above the reserve, by the requests admitted
	max := s.opts.MaxPendingBytes
	s.mu.Lock()
	total := s.pendingBytes
	s.mu.Unlock()
	admitted := group[:0:0]
	short := false
	for _, r := range group {
		disk := r.diskSize()
		if !spare.fits(used + disk) {
			err := spare.err(s.opts.Dir)
			s.mu.Lock()
			s.commitErr = err
			s.mu.Unlock()
			short = true
			r.done <- err
			continue
		}
		if max > 0 && total+r.size > max {
			r.done <- ErrQuota
			continue
		}
		used += disk
		total += r.size
		admitted = append(admitted, r)
	}
	if short {
		s.maybeReclaim() // once a group: it reads the store's directory
	}
	if len(admitted) == 0 {
		return
	}
	s.flushing.RLock()
	touched, kept, err := s.writeGroup(admitted)
	s.flushing.RUnlock()
	if errors.Is(err, badger.ErrTxnTooBig) && len(admitted) > 1 {
		// The bounds above should prevent it; should they not, the
		// halves go in order, each in a transaction of its own.
		s.log.Warn("group commit too big for one transaction: split", "requests", len(admitted))
		half := len(admitted) / 2
		s.commitGroup(admitted[:half])
		s.commitGroup(admitted[half:])
		return
	}
	s.mu.Lock()
	statuses := make([]TargetStatus, 0, len(touched))
	for _, t := range touched {
		statuses = append(statuses, t.status())
	}
	notify := s.notify
	s.mu.Unlock()
	for _, r := range admitted {
		if err != nil && !kept[r] {
			r.done <- err
		} else {
			r.done <- nil
		}
	}
	if notify != nil {
		for _, st := range statuses {
			notify(st)
		}
	}
}

// spareSpace is the free space of the data directory's file system and
// the reserve captures leave on it (Options.MinFreeBytes plus the size of
// Badger's tables), when checked.
type spareSpace struct {
	checked       bool
	free, reserve int64
}

// fits reports whether n bytes can be written without taking the free
// space below the reserve (always, when not checked).
func (sp spareSpace) fits(n int64) bool { return !sp.checked || n <= sp.free-sp.reserve }

// short reports whether the free space is below the reserve.
func (sp spareSpace) short() bool { return !sp.fits(0) }

// err is the answer to a write the space above the reserve cannot take.
func (sp spareSpace) err(dir string) error {
	return fmt.Errorf("%w: %d bytes free in %s, %d kept in reserve", ErrDiskFull, sp.free, dir, sp.reserve)
}

// spareSpace measures the free space of the data directory's file system
// and the reserve. An error reading the free space is logged
// and lets writes go ahead: the check guards against a crash, it must
// not itself stop captures.
func (s *Store) spareSpace() spareSpace {
	if s.opts.MinFreeBytes <= 0 || s.opts.InMemory {
		return spareSpace{}
	}
	free := s.opts.FreeBytes
	if free == nil {
		free = freeBytes
	}
	n, err := free(s.opts.Dir)
	if err != nil {
		s.log.Debug("free space", "error", err)
		return spareSpace{}
	}
	return spareSpace{checked: true, free: n, reserve: s.opts.MinFreeBytes + s.lsmBytes()}
}

// lockFile is the file Badger writes in its directory at Open and
// removes at Close (the pid of the process that holds the directory).
const lockFile = "LOCK"

// dirMoved reports the data directory gone from its path, another
// directory in its place, or its files removed: what the store writes
// then is in files no one will find, and the next start opens what is at
// the path. A directory that is a mount point (a container's volume)
// cannot be removed, but rm -rf on it removes every file in it and leaves
// the directory the one opened: the lock file, which nothing but Close
// removes, is gone then. Two stats.
func (s *Store) dirMoved() error {
	if s.dirInfo == nil {
		return nil
	}
	fi, err := os.Stat(s.opts.Dir)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", ErrDirMoved, err)
	case !os.SameFile(fi, s.dirInfo):
		return fmt.Errorf("%w: %s is another directory than the one opened", ErrDirMoved, s.opts.Dir)
	}
	if _, err := os.Stat(filepath.Join(s.opts.Dir, lockFile)); err != nil {
		return fmt.Errorf("%w: its files were removed: %w", ErrDirMoved, err)
	}
	return nil
}

// maybeReclaim starts, in the background, a compaction of every table
// into the last level (Badger's Flatten), then a collection of the value
// log, when the tables and the value log are mostly taken by hooks
// already delivered or dead letters purged: Badger drops deleted
// hooks only when they reach the last level, and with captures refused
// nothing else may make it compact, so the reserve, which grows with the
// tables, would keep captures refused after the backlog is delivered. Its
// output is at most the live part of the tables, within the reserve. At
// most one at a time, one a minute. Called with the close lock held
// shared.
func (s *Store) maybeReclaim() {
	if s.db == nil || s.opts.InMemory || s.opts.LSMBytes != nil {
		return
	}
	// On the monotonic clock: a step back of the wall clock must not
	// hold reclaims off for its length, captures refused meanwhile.
	now := max(int64(time.Since(monoStart)), 1)
	if last := s.lastReclaim.Load(); last != 0 && now-last < int64(time.Minute) {
		return
	}
	lsm := s.lsmBytes()
	_, vlog := s.DiskUsage()
	s.mu.Lock()
	pending := s.pendingBytes
	s.mu.Unlock()
	// Dead letters stay: a store that is mostly dead letters has nothing
	// to give back (purge them), and a compaction of every table each
	// minute would only load a disk already short.
	live := pending + s.dead.knownBytes()
	if stored := lsm + vlog; stored < 16<<20 || 2*live > stored {
		return // small, or mostly hooks still pending or dead letters: nothing to gain
	}
	// Live is counted in body bytes, which the headers, the records and
	// a dead letter's encoding of small hooks outweigh (dead letters of
	// django-rest-hooks' hooks of 350 bytes take twice their bytes): the
	// test above lets a store of them through. A reclaim gives back what
	// was deleted since the last one: with nothing deleted since, it
	// would rewrite every table for nothing.
	deletes := s.deletes.Load()
	if deletes == s.reclaimedDeletes.Load() {
		return
	}
	if !s.reclaiming.CompareAndSwap(false, true) {
		return
	}
	s.lastReclaim.Store(now)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.reclaiming.Store(false)
		s.log.Info("disk nearly full: compacting to give back the space of delivered hooks",
			"table_bytes", lsm, "value_log_bytes", vlog, "pending_bytes", pending)
		if err := s.flushMemtable(); err != nil {
			s.log.Warn("compaction to give back space failed", "error", err)
			return
		}
		if err := s.db.Flatten(2); err != nil {
			s.log.Warn("compaction to give back space failed", "error", err)
			return
		}
		// Bodies of valueThreshold and more (and dead letters that
		// large) live in the value log, which only its GC gives back,
		// and only for what a compaction has found deleted: the
		// compaction above has counted the delivered ones, so collect
		// them now rather than at the GC's next tick.
		for !s.closing.Load() && s.db.RunValueLogGC(0.5) == nil {
		}
		s.reclaimedDeletes.Store(deletes)
		_, vlog := s.DiskUsage()
		s.log.Info("compacted", "table_bytes", s.lsmBytes(), "value_log_bytes", vlog)
	}()
}

// flushMemtable writes Badger's memtable out as a table. The deletes of
// delivered hooks may all sit in it: while they do, no compaction can
// drop the hooks from the tables, and with captures refused nothing may
// fill the memtable for Badger to flush it. Badger flushes on demand only
// as part of DropPrefix, so this writes one key under a prefix of its own
// and drops that prefix. Badger fails the writes made meanwhile with
// badger.ErrBlockedWrites: group commits wait for it instead (captures
// would fail, and Check report it until the next capture succeeded);
// the sender's writes fail and are retried.
func (s *Store) flushMemtable() error {
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(keyFlush, nil) }); err != nil {
		return fmt.Errorf("flush memtable: %w", err)
	}
	s.flushing.Lock()
	defer s.flushing.Unlock()
	if err := s.db.DropPrefix(keyFlush); err != nil {
		return fmt.Errorf("flush memtable: %w", err)
	}
	return nil
}

// lsmBytes is the size of Badger's tables. A compaction writes its new
// tables before it deletes the ones it merges, so while it runs it needs
// free space as large as what it rewrites; hookproxy's keys make every
// flushed table span the whole key range (flight records, queue keys,
// sequences and target records at once), so a compaction into the base
// level can rewrite nearly every table. Badger writes tables through
// sparse memory-mapped files: without that room the process dies with
// SIGBUS. The reserve therefore grows with the tables.
func (s *Store) lsmBytes() int64 {
	if s.opts.LSMBytes != nil {
		return s.opts.LSMBytes()
	}
	if s.db == nil {
		return 0
	}
	var n int64
	for _, l := range s.db.Levels() {
		n += l.Size
	}
	return n
}

// Space reports the free space of the data directory's file system and
// the reserve captures leave on it (Options.MinFreeBytes plus the size of
// Badger's tables); ok is false when the space is not checked.
func (s *Store) Space() (free, reserve int64, ok bool) {
	sp := s.spareSpace()
	return sp.free, sp.reserve, sp.checked
}

// checkFree returns ErrDiskFull when the data directory's file system
// is short of the reserve.
func (s *Store) checkFree() error {
	if sp := s.spareSpace(); sp.short() {
		return sp.err(s.opts.Dir)
	}
	return nil
}

// placed is a hook written by writeGroup: its request, its target and
// its queue key.
type placed struct {
	req  *putRequest
	hook *Hook
	id   TargetID
	key  []byte
}

// writeGroup commits the requests' hooks and, once committed, counts them
// in the in-memory index; it returns the targets it touched. When the
// commit fails, it also returns the replays whose writes stay all the
// same, which succeeded (see salvage); what stays is counted.
func (s *Store) writeGroup(reqs []*putRequest) (map[TargetID]*target, map[*putRequest]bool, error) {
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	fresh := make(map[string]TargetID)
	var places []placed
	// The targets found by URL are pinned until their hooks are counted
	// (or not written): forgotten meanwhile, they would take hooks under
	// an id whose record is deleted, which no restart would see.
	var pinned []*target
	defer func() {
		s.mu.Lock()
		for _, t := range pinned {
			t.pins--
			s.forgetLocked(t) // a failed commit may leave it with nothing
		}
		s.mu.Unlock()
	}()
	for _, r := range reqs {
		for _, h := range r.hooks {
			seq, err := s.hookSeq.Next()
			if err != nil {
				return nil, nil, fmt.Errorf("next hook sequence: %w", err)
			}
			if !r.keepIDs || h.ID == "" {
				h.ID = newID(s.idTime(h.Received), s.node, seq)
			}
			s.mu.Lock()
			t := s.byURL[h.Target]
			if t != nil {
				t.pins++
				pinned = append(pinned, t)
			}
			s.mu.Unlock()
			var id TargetID
			if t != nil {
				id = t.id
			} else if id = fresh[h.Target]; id == 0 {
				n, err := s.targetSeq.Next()
				if err != nil {
					return nil, nil, fmt.Errorf("next target sequence: %w", err)
				}
				id = TargetID(n + 1) // a sequence starts at 0, which is not a valid id
				fresh[h.Target] = id
				rec, _ := json.Marshal(targetRecord{URL: h.Target})
				if err := txn.Set(targetKey(id), rec); err != nil {
					return nil, nil, fmt.Errorf("put target: %w", err)
				}
			}
			key := queueKey{target: id, seq: seq, received: h.Received, size: h.Size()}.bytes()
			if err := txn.Set(key, encodeHook(h)); err != nil {
				return nil, nil, fmt.Errorf("put hook: %w", err)
			}
			places = append(places, placed{req: r, hook: h, id: id, key: key})
		}
		if r.after != nil {
			if err := r.after(txn); err != nil {
				return nil, nil, fmt.Errorf("put hooks: %w", err)
			}
		}
	}
	var kept map[*putRequest]bool
	syncFailures := s.vlogSyncFailures.Load()
	err := commitTxn(txn)
	if err == nil && s.vlogSyncFailures.Load() != syncFailures {
		// Badger logged a failed sync of the value log, which holds the
		// bodies of valueThreshold and more, and committed all the same:
		// such a hook is not known to be on disk.
		err = errValueLogSync
	}
	if err != nil {
		s.mu.Lock()
		s.commitErr = err
		s.mu.Unlock()
		err = fmt.Errorf("commit hooks: %w", err)
		if places, kept = s.salvage(places, fresh); len(places) == 0 {
			return nil, nil, err
		}
	}

	touched := make(map[TargetID]*target)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.commitErr = nil
	}
	for _, p := range places {
		t := s.targets[p.id]
		if t == nil {
			t = &target{id: p.id, url: p.hook.Target}
			s.targets[p.id] = t
			s.byURL[t.url] = t
		}
		if t.count == 0 {
			t.oldest = p.hook.Received
			if p.req.keepIDs {
				// A replayed hook's arrival was read from disk.
				t.oldest = onClock(t.oldest, now)
			}
		}
		t.count++
		t.bytes += p.hook.Size()
		t.version++
		s.pendingBytes += p.hook.Size()
		touched[t.id] = t
	}
	return touched, kept, err
}

// salvage deals with what a failed commit wrote all the same. Badger
// applies a transaction before it syncs it: when the sync fails, the
// writes are visible, are delivered, and come back from the write-ahead
// log after a restart, though the commit failed. A capture's hook is
// deleted again: the app is told it was not kept (and with
// ON_STORE_ERROR=forward it goes to the receiver directly), and left
// uncounted it put the target's count off by one, so that the target's
// last hook waited for the next capture. A replay's chunk, which records
// in the same transaction how much of its dead letter went back, stays
// whole. salvage returns the hooks that stay, to count, and the replays
// all of whose hooks stay, which succeeded. A capture stays only when its
// deletion failed too: it is counted, as it will be delivered, but the
// app is still told it failed (a 202 is owed only to a synced write).
func (s *Store) salvage(places []placed, fresh map[string]TargetID) ([]placed, map[*putRequest]bool) {
	var (
		stay, undone []placed
		undo         [][]byte
		keepTarget   = make(map[TargetID]bool)
	)
	for _, p := range places {
		switch {
		case !s.visible(p.key):
		case p.req.keepIDs:
			stay = append(stay, p)
			keepTarget[p.id] = true
		default:
			undone = append(undone, p)
			undo = append(undo, p.key)
		}
	}
	if len(undo) > 0 {
		for _, id := range fresh {
			if !keepTarget[id] {
				undo = append(undo, targetKey(id))
			}
		}
		if err := s.deleteKeys(undo); err != nil {
			s.log.Error("delete the hooks of a failed commit", "count", len(undone), "error", err)
		}
		for _, p := range undone {
			if s.visible(p.key) {
				s.log.Error("hook of a failed commit kept: it will be delivered", "hook_id", p.hook.ID)
				stay = append(stay, p)
			}
		}
	}
	n := make(map[*putRequest]int)
	for _, p := range stay {
		n[p.req]++
	}
	kept := make(map[*putRequest]bool)
	for r, c := range n {
		if r.keepIDs && c == len(r.hooks) {
			kept[r] = true
		}
	}
	if len(stay) > 0 {
		s.log.Warn("a failed commit was applied all the same: its hooks are kept", "hooks", len(stay))
	}
	return stay, kept
}

// status snapshots t; called with s.mu held.
func (t *target) status() TargetStatus {
	st := TargetStatus{
		ID:           t.id,
		URL:          t.url,
		Pending:      t.count,
		PendingBytes: t.bytes,
		Oldest:       t.oldest,
		Gone:         t.gone,
		Version:      t.version,
	}
	if t.inflight != nil {
		b := t.inflight.batch(t)
		st.InFlight = &b
	}
	return st
}

// batch builds the Batch of a flight record, without hooks.
func (f *flightRecord) batch(t *target) Batch {
	return Batch{
		ID:           f.ID,
		TargetID:     t.id,
		Target:       t.url,
		Created:      f.Created,
		Attempts:     f.Attempts,
		FirstAttempt: f.FirstAttempt,
		LastAttempt:  f.LastAttempt,
		LastStatus:   f.LastStatus,
		LastError:    f.LastError,
		NextAttempt:  f.NextAttempt,
		Size:         len(f.Keys),
		Bytes:        f.Bytes,
		Cut:          f.Cut,
		Resumed:      f.resumed,
	}
}

// Targets returns the status of every target that has pending hooks, a
// batch in flight or the gone mark.
func (s *Store) Targets() ([]TargetStatus, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.closeMu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TargetStatus, 0, len(s.targets))
	for _, t := range s.targets {
		if t.count > 0 || t.inflight != nil || t.gone {
			out = append(out, t.status())
		}
	}
	return out, nil
}

// Target returns the status of one target.
func (s *Store) Target(id TargetID) (TargetStatus, error) {
	if err := s.enter(); err != nil {
		return TargetStatus{}, err
	}
	defer s.closeMu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.targets[id]
	if t == nil {
		return TargetStatus{}, fmt.Errorf("target %d: %w", id, ErrNotFound)
	}
	return t.status(), nil
}

// Stats is a summary of the whole store.
type Stats struct {
	PendingHooks   int
	PendingBytes   int64
	PendingTargets int
	// Oldest is the arrival time of the oldest pending hook (zero: none).
	Oldest time.Time
}

// Stats summarises the pending hooks of every target.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var st Stats
	for _, t := range s.targets {
		if t.count == 0 {
			continue
		}
		st.PendingHooks += t.count
		st.PendingTargets++
		if st.Oldest.IsZero() || t.oldest.Before(st.Oldest) {
			st.Oldest = t.oldest
		}
	}
	st.PendingBytes = s.pendingBytes
	return st
}

// Claim returns the target's batch in flight, with its hooks, or when
// there is none claims a new one: up to maxHooks hooks (at least one;
// maxHooks <= 0 means no limit) from the head of the FIFO, stopping before
// the body bytes would pass maxBytes (maxBytes <= 0: no limit). The claim
// is durable before Claim returns, so the batch keeps its id across
// restarts. It returns ErrNoHooks when nothing is pending, also for a
// target it does not know (it may have been forgotten: see forgetLocked).
//
// A hook whose record cannot be read for good (see unreadable) does not
// stop the claim: it leaves the queue, and the batch in flight, for a
// dead letter of its own (see dropUnreadable), and the claim goes on
// with the hooks after it. Any other error reading a hook fails the
// claim, and the next one reads it again.
func (s *Store) Claim(id TargetID, maxHooks int, maxBytes int64) (*Batch, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.closeMu.RUnlock()
	for {
		b, again, err := s.claim(id, maxHooks, maxBytes)
		if !again || err != nil {
			return b, err
		}
	}
}

// maxUnreadable bounds the unreadable hooks one claim dead-letters (in
// one transaction); a variable so that tests can reach it.
var maxUnreadable = 256

// errEnoughUnreadable stops a claim's scan at maxUnreadable.
var errEnoughUnreadable = errors.New("enough unreadable hooks for one claim")

// claim is Claim, but when it dropped unreadable hooks and has no batch
// to return for them (the batch in flight held them, or a scan stopped
// at maxUnreadable found no hook to send yet) it returns again, and no
// batch, for Claim to start over. The caller holds the shared close lock.
func (s *Store) claim(id TargetID, maxHooks int, maxBytes int64) (*Batch, bool, error) {
	s.mu.Lock()
	t := s.targets[id]
	if t == nil {
		// Never known, or forgotten once it had nothing left (see
		// forgetLocked): nothing is pending.
		s.mu.Unlock()
		return nil, false, ErrNoHooks
	}
	if fr := t.inflight; fr != nil {
		b := fr.batch(t)
		s.mu.Unlock()
		hooks, bad, err := s.loadHooks(fr.Keys)
		if err == nil && len(bad) > 0 {
			err = s.dropUnreadable(t, fr, bad)
		}
		if err != nil {
			return nil, false, fmt.Errorf("claim target %d: %w", id, err)
		}
		if len(bad) > 0 {
			return nil, true, nil // what is left of the batch, or a new one
		}
		b.Hooks = hooks
		return &b, false, nil
	}
	if t.count == 0 {
		s.mu.Unlock()
		return nil, false, ErrNoHooks
	}
	head, url := t.head, t.url
	s.mu.Unlock()

	var (
		keys  [][]byte
		hooks []Hook
		bad   []unreadableHook
		total int64
		cut   bool
	)
	err := s.db.View(func(txn *badger.Txn) (err error) {
		keys, total, _, cut, err = batchKeys(txn, id, head, maxHooks, maxBytes, func(item *badger.Item) (bool, error) {
			if len(bad) == maxUnreadable {
				return false, errEnoughUnreadable
			}
			h, err := readHook(item)
			if unreadable(err) {
				bad = append(bad, unreadableHook{key: item.KeyCopy(nil), err: err})
				return false, nil
			}
			if err != nil {
				return false, err
			}
			hooks = append(hooks, h)
			return true, nil
		})
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("claim target %d: read hooks: %w", id, err)
	}
	// Out of the queue before the batch after them is claimed: once that
	// batch ends, the head passes them, and a key below the head is
	// deleted as delivered.
	if len(bad) > 0 {
		if err := s.dropUnreadable(t, nil, bad); err != nil {
			return nil, false, fmt.Errorf("claim target %d: %w", id, err)
		}
	}
	if len(keys) == 0 {
		if len(bad) == maxUnreadable {
			return nil, true, nil // there may be more behind them
		}
		return nil, false, ErrNoHooks
	}
	fr, err := s.newFlight(keys, total, cut)
	if err != nil {
		return nil, false, fmt.Errorf("claim target %d: %w", id, err)
	}
	if err := s.putFlight(id, fr); err != nil {
		return nil, false, fmt.Errorf("claim target %d: %w", id, err)
	}
	s.mu.Lock()
	t.inflight = fr
	t.version++
	b := fr.batch(t)
	s.mu.Unlock()
	b.Target = url
	b.Hooks = hooks
	return &b, false, nil
}

func (s *Store) putFlight(id TargetID, fr *flightRecord) error {
	if err := s.db.Update(func(txn *badger.Txn) error { return setFlight(txn, id, fr) }); err != nil {
		return fmt.Errorf("put batch: %w", err)
	}
	return nil
}

// setFlight writes the target's batch in flight in txn, or deletes it
// when fr is nil.
func setFlight(txn *badger.Txn, id TargetID, fr *flightRecord) error {
	if fr == nil {
		return txn.Delete(flightKey(id))
	}
	v, err := json.Marshal(fr)
	if err != nil {
		return fmt.Errorf("encode batch: %w", err)
	}
	return txn.Set(flightKey(id), v)
}

// loadHooks reads the hooks of keys, in order; those it cannot read for
// good (see unreadable) it leaves out and returns in bad.
func (s *Store) loadHooks(keys [][]byte) (hooks []Hook, bad []unreadableHook, err error) {
	hooks = make([]Hook, 0, len(keys))
	err = s.db.View(func(txn *badger.Txn) error {
		for _, k := range keys {
			item, err := txn.Get(k)
			if err != nil {
				return fmt.Errorf("read hook %x: %w", k, err)
			}
			h, err := readHook(item)
			if unreadable(err) {
				bad = append(bad, unreadableHook{key: k, err: err})
				continue
			}
			if err != nil {
				return err
			}
			hooks = append(hooks, h)
		}
		return nil
	})
	return hooks, bad, err
}

// readValue reads an item's value; a variable so that tests can make
// reads fail.
var readValue = (*badger.Item).Value

// readHook reads and decodes the hook record of a queue item.
func readHook(item *badger.Item) (h Hook, err error) {
	err = readRecord(item, func(v []byte) (err error) {
		h, err = decodeHook(v)
		return err
	})
	return h, err
}

// readRecord reads an item's value and hands it to decode; a value lost
// from the value log is an error wrapping errCorrupt.
//
// Badger (v4.9.6, Item.yieldItemValue) does not return the error of a
// failed read from the value log, where records of 64 KiB and more are:
// a pointer past the end of its file (y.ErrEOF: the file was cut short),
// a value that fails its checksum, a missing file. It logs it ("Unable to
// read: Key: ...") and gives an empty value. A record is never empty, so
// an empty value where the item says there is one is that.
func readRecord(item *badger.Item, decode func([]byte) error) error {
	return readValue(item, func(v []byte) error {
		if len(v) == 0 && item.ValueSize() > 0 {
			return fmt.Errorf("value log entry of %d bytes unreadable (Badger logs why, \"Unable to read\"): %w",
				item.ValueSize(), errCorrupt)
		}
		return decode(v)
	})
}

// unreadable reports whether err, from reading a hook's record, says the
// record is damaged for good: it does not decode, or its value-log entry
// cannot be read (see readRecord). Anything else (an I/O error, a closed
// store) may pass: the claim fails, and the next one reads it again.
func unreadable(err error) bool { return errors.Is(err, errCorrupt) }

// unreadableHook is a queued hook whose record cannot be read: its queue
// key and the error.
type unreadableHook struct {
	key []byte
	err error
}

// dropUnreadable moves each hook of bad, all of target t, out of its
// queue to a dead letter of its own, with reason ReasonUnreadable: the
// hook as its queue key knows it (an id rebuilt from the key, see
// unreadableLetter, the target, the arrival), with no body. fr, when not
// nil, is the target's batch in flight, which holds them: they leave it
// in the same transaction, and it goes when nothing is left of it (a
// batch that was sent keeps its id for the hooks it still holds;
// receivers drop it as a repeat). The dead letters need no room in the disk's reserve: they
// hold no bodies, and the hooks' records go with them.
func (s *Store) dropUnreadable(t *target, fr *flightRecord, bad []unreadableHook) error {
	if err := s.recheck(bad); err != nil {
		return err
	}
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	letters, size, totals, err := s.putUnreadable(txn, t, bad)
	if err != nil {
		return err
	}
	drop := make(map[string]bool, len(bad))
	for _, b := range bad {
		if err := txn.Delete(b.key); err != nil {
			return fmt.Errorf("dead-letter unreadable hook: %w", err)
		}
		drop[string(b.key)] = true
	}
	var next *flightRecord
	if fr != nil {
		nf := *fr
		nf.Keys, nf.Bytes = nil, 0
		for _, k := range fr.Keys {
			if !drop[string(k)] {
				q, _ := parseQueueKey(k)
				nf.Keys = append(nf.Keys, k)
				nf.Bytes += q.size
			}
		}
		if len(nf.Keys) > 0 {
			next = &nf
		}
		if err := setFlight(txn, t.id, next); err != nil {
			return fmt.Errorf("dead-letter unreadable hook: %w", err)
		}
	}
	s.dead.begin()
	err = commitTxn(txn)
	s.dead.end(totals, err)
	s.deletes.Add(1) // applied, or not known not to be
	if err != nil && !s.visible(deadKey(letters[0])) {
		return fmt.Errorf("dead-letter unreadable hook: %w", err)
	}
	s.mu.Lock()
	t.count -= len(bad)
	t.bytes -= size
	s.pendingBytes -= size
	if fr != nil {
		t.inflight = next
	}
	t.version++
	count, head := t.count, t.head
	s.forgetLocked(t) // its last hooks may have been these
	s.mu.Unlock()
	if count > 0 {
		// The hooks dropped may have been the oldest.
		if oldest, err := s.headArrival(t.id, head); err == nil {
			s.mu.Lock()
			t.oldest = onClock(oldest, s.now())
			s.mu.Unlock()
		}
	}
	s.reportUnreadable(t, bad, letters)
	return nil
}

// errReadBack: a hook that could not be read read back on a second try.
var errReadBack = errors.New("a hook that could not be read read back on a second try: try again")

// recheck reads the hooks of bad again, in a transaction of its own, and
// returns nil when every one is still unreadable. A value-log GC that
// moves a hook deletes its old file at once when no iterator is open, and
// a transaction that began before the move still holds the old pointer:
// to it the hook reads as lost (see readRecord; txn.Get keeps no file from
// deletion). A transaction begun after that failed read sees where the GC
// moved it. Otherwise errReadBack, or the error of the read, which may
// pass.
func (s *Store) recheck(bad []unreadableHook) error {
	return s.db.View(func(txn *badger.Txn) error {
		for _, b := range bad {
			item, err := txn.Get(b.key)
			if err != nil {
				return fmt.Errorf("read hook %x again: %w", b.key, err)
			}
			if _, err := readHook(item); err == nil {
				return errReadBack
			} else if !unreadable(err) {
				return err
			}
		}
		return nil
	})
}

// putUnreadable writes the dead letter of each hook of bad, all of
// target t, in txn, and returns their ids, the hooks' body bytes and the
// dead letters' figures.
func (s *Store) putUnreadable(txn *badger.Txn, t *target, bad []unreadableHook) (letters []string, size int64, totals DeadTotals, err error) {
	for _, b := range bad {
		k, err := parseQueueKey(b.key)
		if err != nil {
			return nil, 0, DeadTotals{}, err
		}
		dl, err := s.unreadableLetter(t, k, b.err)
		if err != nil {
			return nil, 0, DeadTotals{}, err
		}
		v, err := encodeDeadLetter(dl)
		if err == nil {
			err = txn.Set(deadKey(dl.ID), v)
		}
		if err != nil {
			return nil, 0, DeadTotals{}, fmt.Errorf("dead-letter unreadable hook: %w", err)
		}
		letters = append(letters, dl.ID)
		size += k.size
		totals.add(storedTotals(&dl))
	}
	return letters, size, totals, nil
}

// reportUnreadable logs each hook of bad, moved to dead letter
// letters[i], and tells OnGivenUp.
func (s *Store) reportUnreadable(t *target, bad []unreadableHook, letters []string) {
	for i, b := range bad {
		k, _ := parseQueueKey(b.key)
		s.log.Error("hook record unreadable: moved to the dead letters without its body",
			"hook_id", newID(k.received, s.node, k.seq), "target", TargetHost(t.url), "target_id", uint64(t.id),
			"dead_letter", letters[i], "error", b.err)
		if s.opts.OnGivenUp != nil {
			s.opts.OnGivenUp(ReasonUnreadable, 1)
		}
	}
}

// TargetHost is the part of a target URL that may appear in logs: never
// its path, query or credentials.
func TargetHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "invalid"
	}
	return u.Host
}

// unreadableLetter makes the dead letter of hook k of target t, which
// cannot be read for err. The hook's id is lost with its record and is
// rebuilt from k: its last 16 characters (node and sequence) are those
// of the id the hook was captured with, but that id may carry a later
// time than k's arrival (idTime: a batch id of a later millisecond was
// made while the hook waited for its group commit, a few hooks in a
// hundred under load, or the clock stepped back), and a hook replayed
// from the dead letters kept an id of another sequence.
func (s *Store) unreadableLetter(t *target, k queueKey, err error) (DeadLetter, error) {
	seq, serr := s.batchSeq.Next()
	if serr != nil {
		return DeadLetter{}, fmt.Errorf("next batch sequence: %w", serr)
	}
	now := s.now()
	return DeadLetter{
		ID: newID(s.idTime(now), s.node, seq|batchSeqBit), TargetID: t.id, Target: t.url,
		Hooks:  []Hook{{ID: newID(k.received, s.node, k.seq), Target: t.url, Received: k.received}},
		Reason: ReasonUnreadable, Detail: err.Error(), Created: k.received, GivenUp: now,
	}, nil
}

// visible reports whether key reads back: a write that failed to commit
// was applied all the same (see salvage).
func (s *Store) visible(key []byte) bool {
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(key)
		return err
	})
	return err == nil
}

// inflight returns the target and its in-flight batch when batchID is it.
// Called with s.mu held.
func (s *Store) inflight(id TargetID, batchID string) (*target, *flightRecord, error) {
	t := s.targets[id]
	if t == nil {
		return nil, nil, fmt.Errorf("target %d: %w", id, ErrNotFound)
	}
	if t.inflight == nil || t.inflight.ID != batchID {
		return nil, nil, fmt.Errorf("batch %s of target %d: %w", batchID, id, ErrBatchMismatch)
	}
	return t, t.inflight, nil
}

// RecordAttempt records a failed attempt of the in-flight batch: the
// attempt count, the failure and when the next attempt is due. The record
// survives restarts, so retries are counted across them.
func (s *Store) RecordAttempt(id TargetID, batchID string, f Failure) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	s.mu.Lock()
	t, cur, err := s.inflight(id, batchID)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("record attempt: %w", err)
	}
	fr := *cur
	s.mu.Unlock()
	fr.Attempts++
	if fr.FirstAttempt.IsZero() {
		fr.FirstAttempt = f.At
	}
	fr.LastAttempt, fr.LastStatus, fr.LastError, fr.NextAttempt = f.At, f.Status, f.Error, f.Next
	if err := s.putFlight(id, &fr); err != nil {
		return fmt.Errorf("record attempt: %w", err)
	}
	s.mu.Lock()
	t.inflight = &fr
	t.version++
	s.mu.Unlock()
	return nil
}

// NextClaim asks Ack to claim the target's next batch in the same
// transaction that removes the delivered one, so that a target with a
// backlog costs one synced write per batch instead of two. Its zero value
// claims nothing.
type NextClaim struct {
	// MinHooks is how many hooks must remain pending for the next batch
	// to be claimed (a full batch is due at once); 0: never claim.
	MinHooks int
	// MaxHooks and MaxBytes bound the batch as in Claim.
	MaxHooks int
	MaxBytes int64
}

// Ack removes the delivered in-flight batch and its hooks, and returns the
// target's new status. When next asks for it and enough hooks remain, it
// also claims the next batch (durably, like Claim): the status then holds
// it as InFlight, and Claim returns it.
func (s *Store) Ack(id TargetID, batchID string, next NextClaim) (TargetStatus, error) {
	return s.finish(id, batchID, nil, next)
}

// Discard removes the in-flight batch and its hooks without keeping them
// (the on-give-up=discard setting), and returns the target's new status;
// next claims the next batch as in Ack.
func (s *Store) Discard(id TargetID, batchID string, next NextClaim) (TargetStatus, error) {
	return s.finish(id, batchID, nil, next)
}

// GiveUp moves the in-flight batch, with its hooks, to the dead-letter
// store with a reason and the final failure, and returns the target's new
// status. f is the final attempt, which must not also have been recorded
// with RecordAttempt; f.At zero means the batch is given up without a
// final attempt (a target marked gone, say). next claims the next batch
// as in Ack.
func (s *Store) GiveUp(id TargetID, batchID, reason string, f Failure, next NextClaim) (TargetStatus, error) {
	return s.finish(id, batchID, &deadInfo{reason: reason, failure: f}, next)
}

// GiveUpGone is GiveUp for a batch whose receiver answered 410 Gone: the
// target's gone mark is set in the same transaction, so that a crash
// cannot leave the mark without the dead letter of the batch that caused
// it. A gone target claims no next batch.
func (s *Store) GiveUpGone(id TargetID, batchID, reason string, f Failure) (TargetStatus, error) {
	return s.finish(id, batchID, &deadInfo{reason: reason, failure: f, gone: true}, NextClaim{})
}

// DiscardGone is Discard for a batch whose receiver answered 410 Gone:
// the target's gone mark is set in the same transaction.
func (s *Store) DiscardGone(id TargetID, batchID string) (TargetStatus, error) {
	return s.finish(id, batchID, &deadInfo{discard: true, gone: true}, NextClaim{})
}

// deadInfo says how finish ends a batch that was not delivered.
type deadInfo struct {
	reason  string
	failure Failure
	discard bool // drop the batch instead of keeping a dead letter
	gone    bool // and set the target's gone mark
}

// finish ends the in-flight batch: the head moves past it and the batch
// record goes in one transaction (with the dead letter, when given); the
// hook keys are deleted in the same transaction when they fit, and
// otherwise right after (a crash in between leaves keys below the head,
// which Open deletes). When next asks for it, the next batch's claim is
// written in the same transaction.
func (s *Store) finish(id TargetID, batchID string, dead *deadInfo, next NextClaim) (TargetStatus, error) {
	if err := s.enter(); err != nil {
		return TargetStatus{}, err
	}
	defer s.closeMu.RUnlock()
	s.recMu.Lock()
	defer s.recMu.Unlock()
	s.mu.Lock()
	t, fr, err := s.inflight(id, batchID)
	if err != nil {
		s.mu.Unlock()
		return TargetStatus{}, err
	}
	gone := t.gone || (dead != nil && dead.gone)
	rec := targetRecord{URL: t.url, Head: fr.lastSeq() + 1, Gone: gone}
	claimNext := next.MinHooks > 0 && !gone && t.count-len(fr.Keys) >= next.MinHooks
	s.mu.Unlock()

	recBytes, _ := json.Marshal(rec)
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	if err := txn.Set(targetKey(id), recBytes); err != nil {
		return TargetStatus{}, fmt.Errorf("finish batch %s: %w", batchID, err)
	}
	var (
		nextFr *flightRecord
		oldest time.Time // arrival of the new head, when nextFr is set
	)
	if claimNext {
		nextFr, oldest, err = s.claimAfter(txn, id, rec.Head, next)
		if err != nil {
			return TargetStatus{}, fmt.Errorf("finish batch %s: claim the next: %w", batchID, err)
		}
	}
	if err := setFlight(txn, id, nextFr); err != nil {
		return TargetStatus{}, fmt.Errorf("finish batch %s: %w", batchID, err)
	}
	var (
		bad     []unreadableHook // hooks of a batch given up that cannot be read
		letters []string         // and their dead letters
		totals  DeadTotals       // the figures of the dead letters written
	)
	if dead != nil && !dead.discard {
		var hooks []Hook
		hooks, bad, err = s.loadHooks(fr.Keys)
		if err == nil && len(bad) > 0 {
			err = s.recheck(bad)
		}
		if err != nil {
			return TargetStatus{}, fmt.Errorf("dead-letter batch %s: %w", batchID, err)
		}
		// Each in a dead letter of its own, as a claim does (Claim read
		// them all; a value log damaged since then).
		var lost DeadTotals
		if letters, _, lost, err = s.putUnreadable(txn, t, bad); err != nil {
			return TargetStatus{}, fmt.Errorf("dead-letter batch %s: %w", batchID, err)
		}
		totals.add(lost)
		first := fr.FirstAttempt
		if first.IsZero() {
			first = dead.failure.At
		}
		attempts := fr.Attempts
		if !dead.failure.At.IsZero() {
			attempts++ // the final attempt, which GiveUp records itself
		}
		dl := DeadLetter{
			ID: fr.ID, TargetID: id, Target: t.url, Hooks: hooks,
			Reason: dead.reason, Detail: dead.failure.Error, Attempts: attempts,
			LastStatus: dead.failure.Status, FirstAttempt: first, LastAttempt: dead.failure.At,
			Created: fr.Created, GivenUp: s.now(),
		}
		parts, err := deadLetterParts(dl)
		if err != nil {
			return TargetStatus{}, fmt.Errorf("encode dead letter %s: %w", batchID, err)
		}
		if len(hooks) == 0 {
			parts = nil // none could be read: their own dead letters are all there is
		}
		// A dead letter is written anew (the hooks' records only go at
		// a compaction): on a disk short of its reserve it waits, its
		// batch in flight, as captures do.
		var size int64
		for _, p := range parts {
			size += int64(len(deadKey(p.id)) + len(p.value))
		}
		if sp := s.spareSpace(); !sp.fits(size) {
			s.maybeReclaim()
			return TargetStatus{}, fmt.Errorf("dead-letter batch %s: %w", batchID, sp.err(s.opts.Dir))
		}
		for _, p := range parts {
			if err := txn.Set(deadKey(p.id), p.value); err != nil {
				return TargetStatus{}, fmt.Errorf("dead-letter batch %s: %w", batchID, err)
			}
		}
		if len(parts) > 0 {
			whole := storedTotals(&dl)
			whole.Letters = len(parts)
			totals.add(whole)
		}
	}
	rest := fr.Keys
	for len(rest) > 0 {
		if err := txn.Delete(rest[0]); errors.Is(err, badger.ErrTxnTooBig) {
			break
		} else if err != nil {
			return TargetStatus{}, fmt.Errorf("finish batch %s: %w", batchID, err)
		}
		rest = rest[1:]
	}
	// The records of targets forgotten since, in the same write (no sync
	// of their own), while it has room.
	s.mu.Lock()
	forgotten := s.forgotten
	s.forgotten = nil
	s.mu.Unlock()
	deleted := 0
forget:
	for _, f := range forgotten {
		if len(rest) > 0 || deleted == maxForgetPerWrite {
			break
		}
		for _, k := range f.recordKeys() {
			if txn.Delete(k) != nil {
				break forget // too big: the next batch's end deletes it
			}
		}
		deleted++
	}
	s.dead.begin()
	err = commitTxn(txn)
	s.dead.end(totals, err)
	if err != nil {
		deleted = 0 // not known to be done: done again, which is harmless
	}
	if left := forgotten[deleted:]; len(left) > 0 {
		s.mu.Lock()
		s.forgotten = append(left, s.forgotten...)
		s.mu.Unlock()
	}
	if err != nil {
		if !s.ended(id, batchID) {
			return TargetStatus{}, fmt.Errorf("finish batch %s: %w", batchID, err)
		}
		// Applied all the same (a failed sync: see salvage): the
		// batch's hooks are gone from the store, so the in-memory
		// index follows, or every claim of the target would fail on
		// them until a restart. Should the write not reach the disk,
		// the batch comes back after a restart under its own id: a
		// repeat receivers drop. The next batch claimed with it is not
		// taken up: it was not known to be on disk, and sent, then
		// lost, it would be sent again under another id.
		s.log.Warn("ending a batch failed after it was applied: the batch is taken as ended", "batch_id", batchID, "error", err)
		nextFr, oldest = nil, time.Time{}
	}
	s.reportUnreadable(t, bad, letters)
	leftover := false
	if len(rest) > 0 {
		if err := s.deleteKeys(rest); err != nil {
			s.log.Warn("delete delivered hooks; they are deleted at the next start", "batch_id", batchID, "error", err)
			leftover = true
		}
	}
	s.deletes.Add(1) // once every delete is written

	s.mu.Lock()
	defer s.mu.Unlock()
	t.leftover = t.leftover || leftover
	t.head = rec.Head
	t.gone = gone
	t.count -= len(fr.Keys)
	t.bytes -= fr.Bytes
	s.pendingBytes -= fr.Bytes
	t.inflight = nextFr
	t.version++
	if t.count > 0 && nextFr == nil {
		oldest, err = s.headArrival(id, t.head)
		if err != nil {
			s.log.Warn("read oldest pending hook", "target_id", id, "error", err)
			oldest = s.now()
		}
	}
	t.oldest = onClock(oldest, s.now())
	st := t.status()
	s.forgetLocked(t)
	return st, nil
}

// maxForgetPerWrite bounds the records of forgotten targets that the end
// of one batch deletes.
const maxForgetPerWrite = 64

// forgetLocked forgets t when it has nothing pending, no batch in flight,
// no gone mark, no capture being written to it and no delivered hooks
// left to delete (see target.leftover), as a restart would
// (see forgetIdle): subscriptions come and go, and with per-subscriber
// URLs every URL ever posted to would otherwise stay in memory (and be
// walked by every Stats and Targets) until the next start. Its record is
// deleted by the end of a later batch (or the next start). A capture for
// its URL makes its target again, under a new id; dead letters keep the
// URL and the id they had. Called with s.mu held.
func (s *Store) forgetLocked(t *target) {
	if !t.idle() || s.targets[t.id] != t {
		return
	}
	s.drop(t)
	s.forgotten = append(s.forgotten, t)
}

// idle reports whether t may be forgotten: nothing pending, no batch in
// flight, no gone mark, no capture being written to it and no delivered
// hooks left to delete.
func (t *target) idle() bool {
	return t.count == 0 && t.inflight == nil && !t.gone && t.pins == 0 && !t.leftover
}

// recordKeys are the keys of t's record: its own and, from versions that
// wrote it, its URL's.
func (t *target) recordKeys() [][]byte { return [][]byte{targetKey(t.id), urlKey(t.url)} }

// drop takes t out of the in-memory index; called with s.mu held (or
// before the store is shared).
func (s *Store) drop(t *target) {
	delete(s.targets, t.id)
	if s.byURL[t.url] == t { // not a later target of the URL (see rebuild)
		delete(s.byURL, t.url)
	}
}

// ended reports whether the target's in-flight batch in the store is no
// longer batchID: a write that ended it was applied.
func (s *Store) ended(id TargetID, batchID string) bool {
	var fr flightRecord
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(flightKey(id))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return json.Unmarshal(v, &fr) })
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return true
	}
	return err == nil && fr.ID != batchID
}

// claimAfter builds the flight record of the target's next batch, from
// the queue keys at or after head (key-only: a key carries its hook's
// size), bounded as next says, and returns it with the arrival of its
// first hook; nil when nothing is pending.
func (s *Store) claimAfter(txn *badger.Txn, id TargetID, head uint64, next NextClaim) (*flightRecord, time.Time, error) {
	keys, total, first, cut, err := batchKeys(txn, id, head, next.MaxHooks, next.MaxBytes, nil)
	if err != nil || len(keys) == 0 {
		return nil, time.Time{}, err
	}
	fr, err := s.newFlight(keys, total, cut)
	return fr, first, err
}

// batchKeys returns the queue keys of the target's next batch, from head:
// up to maxHooks of them (maxHooks <= 0: no limit; at least one), stopping
// before the body bytes would pass maxBytes (maxBytes <= 0: no limit),
// with their body bytes and the arrival of the first; cut reports that
// maxBytes stopped it with hooks behind it. each, when not nil, is called
// with every item before it is taken, to read its value; an item it
// answers false for is left out, and the batch goes on after it, unless
// it also returns errEnoughUnreadable, which ends the batch there.
func batchKeys(txn *badger.Txn, id TargetID, head uint64, maxHooks int, maxBytes int64,
	each func(*badger.Item) (bool, error)) (keys [][]byte, total int64, first time.Time, cut bool, err error) {
	prefix := queuePrefix(id)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Seek(seekKey(id, head)); it.ValidForPrefix(prefix); it.Next() {
		if maxHooks > 0 && len(keys) >= maxHooks {
			break
		}
		item := it.Item()
		k, err := parseQueueKey(item.Key())
		if err != nil {
			return nil, 0, time.Time{}, false, err
		}
		if maxBytes > 0 && len(keys) > 0 && total+k.size > maxBytes {
			cut = true
			break
		}
		if each != nil {
			take, err := each(item)
			if errors.Is(err, errEnoughUnreadable) {
				cut = len(keys) > 0 // a full batch: what it left behind is due
				break
			}
			if err != nil {
				return nil, 0, time.Time{}, false, err
			}
			if !take {
				continue
			}
		}
		if len(keys) == 0 {
			first = k.received
		}
		keys = append(keys, item.KeyCopy(nil))
		total += k.size
	}
	return keys, total, first, cut, nil
}

// newFlight makes the record of a new batch of keys, with a new batch id.
func (s *Store) newFlight(keys [][]byte, total int64, cut bool) (*flightRecord, error) {
	seq, err := s.batchSeq.Next()
	if err != nil {
		return nil, fmt.Errorf("next batch sequence: %w", err)
	}
	now := s.now()
	return &flightRecord{ID: newID(s.idTime(now), s.node, seq|batchSeqBit), Created: now, Keys: keys, Bytes: total, Cut: cut}, nil
}

// monoStart is a time of this process's monotonic clock, from which
// durations that no step of the wall clock may change are counted.
var monoStart = time.Now()

// onClock returns t, a time read from disk, as a time of this process's
// clock at now: with now's monotonic reading, so that a later step of the
// wall clock (NTP, a VM resumed from suspend) does not move it, and never
// after now. A stored time after now means the wall clock stepped back
// since it was written; the event then counts as having happened now.
// Without this, a batch due a window after its oldest hook's arrival
// waited out the whole step (an hour for a step of an hour), and its
// age read as zero meanwhile. A step forward across a restart cannot be
// told from time that passed: stored times then read that much older.
func onClock(t, now time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return now.Add(-max(now.Sub(t), 0))
}

// onClock puts the times of a flight record read from disk on this
// process's clock (see onClock). The next attempt keeps its distance from
// the last one: after a step back it comes at most that wait from now,
// not the step later.
func (f *flightRecord) onClock(now time.Time) {
	if !f.NextAttempt.IsZero() {
		if base := f.LastAttempt; !base.IsZero() {
			f.NextAttempt = onClock(base, now).Add(f.NextAttempt.Sub(base))
		} else {
			f.NextAttempt = now.Add(f.NextAttempt.Sub(now))
		}
	}
	f.Created = onClock(f.Created, now)
	f.FirstAttempt = onClock(f.FirstAttempt, now)
	f.LastAttempt = onClock(f.LastAttempt, now)
}

// idTime is the time an id made at t carries: t, or the newest id's time
// when the wall clock has stepped back since, so that ids sort in the
// order they were made (dead letters are listed and replayed in id
// order). Across a restart the newest time is taken from the stored
// batch ids, dead letters and hook arrivals (rebuild); a pending hook
// whose id got a time past its arrival (captured after a step back) may
// still sort after ids made after the restart.
func (s *Store) idTime(t time.Time) time.Time {
	ms := t.UnixMilli()
	for {
		last := s.lastIDMillis.Load()
		if ms <= last {
			return time.UnixMilli(last)
		}
		if s.lastIDMillis.CompareAndSwap(last, ms) {
			return t
		}
	}
}

// headArrival returns the arrival time of the first hook at or after seq.
func (s *Store) headArrival(id TargetID, seq uint64) (time.Time, error) {
	var at time.Time
	err := s.db.View(func(txn *badger.Txn) error {
		prefix := queuePrefix(id)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		it.Seek(seekKey(id, seq))
		if !it.ValidForPrefix(prefix) {
			return ErrNoHooks
		}
		k, err := parseQueueKey(it.Item().Key())
		at = k.received
		return err
	})
	return at, err
}

// badgerLogger sends Badger's messages to slog; its info messages are
// routine, so they go out at debug level, and its debug messages not at all.
// It counts the failed syncs of the value log in vlogSyncFailures: Badger
// logs them and lets the write's commit succeed (value.go, valueLog.write).
type badgerLogger struct {
	l                *slog.Logger
	vlogSyncFailures *atomic.Uint64
}

// vlogSyncFailed starts Badger's message for a failed sync of the value
// log.
const vlogSyncFailed = "Error while curlf sync"

// errValueLogSync is the error of a commit during which a sync of the
// value log failed.
var errValueLogSync = errors.New("the value log's sync failed (see Badger's error before this)")

func (b badgerLogger) Errorf(f string, a ...any) {
	msg := trim(fmt.Sprintf(f, a...))
	if strings.HasPrefix(msg, vlogSyncFailed) {
		b.vlogSyncFailures.Add(1)
	}
	b.l.Error(msg, "component", "badger")
}
func (b badgerLogger) Warningf(f string, a ...any) {
	msg := trim(fmt.Sprintf(f, a...))
	if cacheAdvice(msg) {
		b.l.Debug(msg, "component", "badger")
		return
	}
	b.l.Warn(msg, "component", "badger")
}

// cacheAdvice reports whether msg is Badger's once-a-minute advice that a
// cache is too small. Hooks are read about once (to deliver them), so a
// low hit ratio is the normal state of hookproxy's small caches, not
// something an operator should act on.
func cacheAdvice(msg string) bool {
	return strings.Contains(msg, "cache might be too small") || strings.HasPrefix(msg, "Cache life expectancy")
}
func (b badgerLogger) Infof(f string, a ...any) {
	b.l.Debug(trim(fmt.Sprintf(f, a...)), "component", "badger")
}
func (b badgerLogger) Debugf(string, ...any) {} // per-write chatter

func trim(s string) string { return string(bytes.TrimSpace([]byte(s))) }

// Check reports whether the store accepts writes: ErrClosed after Close,
// ErrDiskFull while the disk is short of its reserve, the error of the
// last hook commit when it failed otherwise and none succeeded since, nil
// otherwise.
func (s *Store) Check() error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	s.mu.Lock()
	err := s.commitErr
	s.mu.Unlock()
	if moved := s.dirMoved(); moved != nil {
		return moved
	}
	// The directory decides, as the disk does below: an app that sees
	// the sidecar unready sends no capture to clear a refusal.
	if err != nil && !errors.Is(err, ErrDiskFull) && !errors.Is(err, ErrDirMoved) {
		return fmt.Errorf("last commit failed: %w", err)
	}
	// The disk decides, not the last capture: space may have run short
	// with no capture refused yet (deliveries and Badger write too), or
	// come back with none to say so (an app that sees the sidecar unready
	// sends none).
	if free := s.checkFree(); free != nil {
		s.maybeReclaim()
		return free
	}
	if err != nil {
		s.mu.Lock()
		if s.commitErr == err { // not a refusal made meanwhile
			s.commitErr = nil
		}
		s.mu.Unlock()
	}
	return nil
}

// SetGone sets or clears the target's gone mark (a receiver answered 410
// Gone; an operator clears it). It is durable before SetGone returns.
func (s *Store) SetGone(id TargetID, gone bool) (TargetStatus, error) {
	if err := s.enter(); err != nil {
		return TargetStatus{}, err
	}
	defer s.closeMu.RUnlock()
	s.recMu.Lock()
	defer s.recMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.targets[id]
	if t == nil {
		return TargetStatus{}, fmt.Errorf("target %d: %w", id, ErrNotFound)
	}
	if t.gone == gone {
		return t.status(), nil
	}
	rec, _ := json.Marshal(targetRecord{URL: t.url, Head: t.head, Gone: gone})
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(targetKey(id), rec) }); err != nil {
		return TargetStatus{}, fmt.Errorf("mark target %d gone=%t: %w", id, gone, err)
	}
	t.gone = gone
	t.version++
	st := t.status()
	s.forgetLocked(t)
	return st, nil
}

// DiskUsage returns the bytes the store's files take on disk, from the
// files in its directory, read at each call: lsm counts the tables
// (*.sst) and the memtables' write-ahead logs (*.mem), where hooks stored
// inline sit until their memtable is written out as a table; vlog counts
// the value log (*.vlog: the bodies of 64 KiB and more). Badger's small
// bookkeeping files (MANIFEST, DISCARD, KEYREGISTRY) are not counted. An
// in-memory store reports 0, 0.
//
// A file counts for the blocks it occupies (what du reports; its length
// where the platform does not tell), not for its length: Badger creates
// each memtable log and the value log file it writes to at their full
// length (16 MiB and 128 MiB here), sparse, and fills them in as it goes.
//
// Badger's own DB.Size would do, but it reports 0, 0 unless Badger's
// metrics are on, and they are off (they cost on every write). It counts
// *.sst and *.vlog by length, refreshed once a minute; this reads one
// directory of a few hundred files at most, cheap enough for every
// /metrics scrape without a cache.
func (s *Store) DiskUsage() (lsm, vlog int64) {
	if s.opts.InMemory {
		return 0, 0
	}
	// Badger keeps all its files in Dir (ValueDir is the same here).
	entries, err := os.ReadDir(s.opts.Dir)
	if err != nil {
		s.log.Debug("disk usage", "error", err)
	}
	for _, e := range entries {
		var part *int64
		switch filepath.Ext(e.Name()) {
		case ".sst", ".mem":
			part = &lsm
		case ".vlog":
			part = &vlog
		default:
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // deleted since the directory was read: a compaction or a GC
		}
		*part += allocated(fi)
	}
	return lsm, vlog
}
