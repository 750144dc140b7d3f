// Package buffer owns hookproxy's domain types (a captured hook, a batch,
// a target, a dead letter) and all durable state, kept in Badger.
//
// A hook is acknowledged to the app only after Put returns, and Put returns
// only after the hook is committed and synced to disk. Per target, hooks
// form a FIFO; the sender claims a batch from the head of a target's FIFO,
// and the claimed batch (with its id) is itself durable, so a restart sends
// the very same batch again.
package buffer

import (
	"errors"
	"net/http"
	"time"
)

// TargetID identifies a target URL inside one store. The zero value is
// never a valid id.
type TargetID uint64

// Hook is one captured webhook request.
type Hook struct {
	// ID is unique and sortable by capture time; Put assigns it.
	ID string
	// Target is the exact URL the app posted to.
	Target string
	// Method is the request method (POST unless configured otherwise).
	Method string
	// Header holds the end-to-end request headers the app sent (hop-by-hop
	// and proxy headers already removed). Nil means none.
	Header http.Header
	// Body is the request body exactly as the app sent it.
	Body []byte
	// Received is when the proxy accepted the request; Put sets it when zero.
	Received time.Time
}

// Size is what the hook counts for against byte limits.
func (h *Hook) Size() int64 { return int64(len(h.Body)) }

// Batch is a run of hooks from the head of one target's FIFO, claimed for
// delivery. Its ID stays the same across attempts and restarts until the
// batch is acknowledged or dead-lettered.
type Batch struct {
	ID       string
	TargetID TargetID
	Target   string
	// Hooks in arrival order.
	Hooks []Hook
	// Created is when the batch was first claimed.
	Created time.Time
	// Attempts is how many delivery attempts were recorded so far.
	Attempts int
	// FirstAttempt is when the first attempt was recorded (zero if none).
	FirstAttempt time.Time
	// LastAttempt is when the last attempt was recorded (zero if none).
	LastAttempt time.Time
	// LastStatus is the HTTP status of the last attempt (0 if none or a
	// network error).
	LastStatus int
	// LastError describes why the last attempt failed ("" if none).
	LastError string
	// NextAttempt is when the sender scheduled the next attempt (zero:
	// as soon as possible).
	NextAttempt time.Time
	// Size is the number of hooks in the batch (also when Hooks is nil).
	Size int
	// Bytes is the sum of the hook body sizes.
	Bytes int64
	// Cut is set when the byte limit of the claim ended the batch before
	// the next pending hook: the batch is full, and what it left behind
	// was due with it.
	Cut bool
	// Resumed is set when the batch was already in flight when the store
	// was opened: claimed by an earlier run of the process, it may have
	// been sent (whole or in part) by an attempt that was never recorded,
	// one cut short by a crash or by the end of a drain.
	Resumed bool
}

// TargetStatus is a snapshot of one target's state, derived from disk.
type TargetStatus struct {
	ID  TargetID
	URL string
	// Pending is the number of hooks not yet acknowledged, including those
	// of the in-flight batch.
	Pending int
	// PendingBytes is the body bytes of those hooks.
	PendingBytes int64
	// Oldest is the arrival time of the oldest pending hook (zero when
	// Pending is 0).
	Oldest time.Time
	// InFlight is the claimed batch that awaits acknowledgement, without
	// its hooks (nil when none).
	InFlight *Batch
	// Gone is set when the receiver answered 410 Gone and an operator has
	// not cleared it since.
	Gone bool
	// Version increases with every change of the target; a consumer that
	// receives statuses out of order keeps the highest.
	Version uint64
}

// DeadLetter is a batch that was given up on, kept with its reason.
type DeadLetter struct {
	// ID is the dead letter's own id (the batch id it had).
	ID       string
	TargetID TargetID
	Target   string
	Hooks    []Hook
	// Reason is a short machine-readable cause: "retries-exhausted",
	// "max-age", "status", "gone", "blocked", "invalid-request", or
	// ReasonUnreadable.
	Reason string
	// Detail is a readable explanation (the last status or error).
	Detail       string
	Attempts     int
	LastStatus   int
	FirstAttempt time.Time
	LastAttempt  time.Time
	Created      time.Time
	// GivenUp is when the batch was moved to the dead-letter store.
	GivenUp time.Time
	// Size is the number of hooks and Bytes their body bytes (set also
	// when a listing leaves the hooks out).
	Size  int   `json:"-"`
	Bytes int64 `json:"-"`
	// replayed is how many hooks of the stored letter an interrupted
	// replay put back already: they are not in Hooks.
	replayed int
	// damaged says its record could not be read: it is listed by its id
	// alone, and what it held is not known.
	damaged bool
}

// ReasonUnreadable is the reason of a dead letter made by the store
// itself: a queued hook whose record could not be read (a damaged value
// log, say). It holds that hook alone, as its queue key knows it (an id
// rebuilt from the key, which may differ from the hook's own in its time
// part, or wholly for a hook replayed from the dead letters; target;
// arrival), without a body or headers; Detail says what the read
// returned. Such a dead letter can be listed and purged, never replayed.
// A dead letter whose own record cannot be read is listed with this
// reason too, with its id alone.
const ReasonUnreadable = "unreadable"

// Failure describes how a delivery attempt failed, for RecordAttempt and
// DeadLetter.
type Failure struct {
	At     time.Time
	Status int    // HTTP status, 0 for a network error
	Error  string // readable cause
	// Next is when the next attempt is scheduled (RecordAttempt only).
	Next time.Time
}

var (
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("store closed")
	// ErrNoHooks is returned by Claim when the target has nothing pending.
	ErrNoHooks = errors.New("no pending hooks")
	// ErrBatchMismatch is returned when the batch id given is not the
	// target's in-flight batch.
	ErrBatchMismatch = errors.New("batch is not in flight")
	// ErrNotFound is returned for unknown targets or dead letters.
	ErrNotFound = errors.New("not found")
	// ErrQuota is returned by Put when accepting the hook would exceed the
	// configured pending-bytes limit.
	ErrQuota = errors.New("pending bytes quota exceeded")
	// ErrDiskFull is returned by Put when the data directory's file
	// system has less free space than Options.MinFreeBytes.
	ErrDiskFull = errors.New("disk nearly full")
	// ErrDirMoved is returned by Put, and by Check, when the data
	// directory was removed or replaced since Open: nothing written then
	// would be found at the next start.
	ErrDirMoved = errors.New("data directory removed or replaced since the store was opened")
)
