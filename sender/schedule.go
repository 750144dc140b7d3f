package sender

import (
	"container/heap"
	"container/list"
	"net"
	"net/url"
	"strings"
	"time"

	"hookproxy/buffer"
)

// target is the scheduler's view of one target. It is small, since idle
// targets by the hundred thousand wait in the heap. Every field is guarded
// by Sender.mu.
type target struct {
	id      buffer.TargetID
	version uint64 // highest status version applied
	pending int    // hooks not yet acknowledged, in-flight ones included
	oldest  time.Time
	due     time.Time
	index   int  // position in the heap; -1 when not scheduled
	busy    bool // a worker is sending its batch
	held    bool // set aside by Drain after a failed attempt
	gone    bool // marked gone: its hooks are dead-lettered, not sent
	// slow is set when its last attempt took half the send timeout or
	// more: it waits in Sender.slow, not Sender.queue.
	slow bool
	// extra is set only while a batch is in flight, the target is held
	// back or it owes the store an outcome, so that the many targets that
	// only wait do not pay for it.
	extra *targetExtra
}

type targetExtra struct {
	// flight is the id of the batch in flight ("" when none). Only this
	// sender claims and ends batches, so its own record wins over a
	// status that says otherwise (such a status predates the claim).
	flight    string
	next      time.Time // the batch's next attempt
	notBefore time.Time // held back until then after a store error
	// owed is the outcome of the batch's last attempt when the store
	// could not record it: the next turn records it instead of sending
	// the batch again (the receiver has had its answer).
	owed *settlement
}

// schedState is the input of the due policy.
func (t *target) schedState() schedState {
	st := schedState{Pending: t.pending, Oldest: t.oldest, Gone: t.gone}
	if x := t.extra; x != nil {
		st.InFlight, st.NextAttempt, st.NotBefore = x.flight != "", x.next, x.notBefore
	}
	return st
}

func (t *target) flight() string {
	if t.extra == nil {
		return ""
	}
	return t.extra.flight
}

// setExtra changes t's extra fields with set. zero says that set leaves
// the fields it changes zero: on a target without extra fields it is then
// not called, and nothing is allocated. The extra fields are dropped once
// they are all zero.
func (t *target) setExtra(zero bool, set func(*targetExtra)) {
	if t.extra == nil {
		if zero {
			return
		}
		t.extra = &targetExtra{}
	}
	set(t.extra)
	if *t.extra == (targetExtra{}) {
		t.extra = nil
	}
}

// setFlight records the batch in flight and its next attempt.
func (t *target) setFlight(id string, next time.Time) {
	t.setExtra(id == "" && next.IsZero(), func(x *targetExtra) { x.flight, x.next = id, next })
}

// owed returns the outcome owed to the store, or nil.
func (t *target) owed() *settlement {
	if t.extra == nil {
		return nil
	}
	return t.extra.owed
}

// setOwed keeps (or, given nil, forgets) an outcome owed to the store.
func (t *target) setOwed(o *settlement) {
	t.setExtra(o == nil, func(x *targetExtra) { x.owed = o })
}

// setNotBefore holds the target back until then (zero: not held back).
func (t *target) setNotBefore(until time.Time) {
	t.setExtra(until.IsZero(), func(x *targetExtra) { x.notBefore = until })
}

// clearFlight forgets the batch in flight (it was ended).
func (t *target) clearFlight() {
	t.setExtra(true, func(x *targetExtra) { x.flight, x.next = "", time.Time{} })
}

// applyLocked merges a status into the schedule and reports whether the
// loop must wake. Statuses older than what is known are ignored. Called
// with s.mu held.
func (s *Sender) applyLocked(st buffer.TargetStatus) bool {
	t := s.targets[st.ID]
	if t == nil {
		if st.Pending <= 0 && st.InFlight == nil {
			return false
		}
		t = &target{id: st.ID, index: -1}
		s.targets[st.ID] = t
	} else if st.Version <= t.version {
		return false
	}
	t.version = st.Version
	t.pending, t.oldest, t.gone = st.Pending, st.Oldest, st.Gone
	if f := st.InFlight; f != nil {
		if t.flight() != f.ID {
			t.setFlight(f.ID, f.NextAttempt)
		} else if f.NextAttempt.After(t.extra.next) {
			t.extra.next = f.NextAttempt
		}
	}
	return s.rescheduleLocked(t)
}

// rescheduleLocked puts t at its due time in the heap, or forgets it when
// nothing is pending, and reports whether the loop must wake because t is
// now the earliest and earlier than the loop's timer. Called with s.mu
// held.
func (s *Sender) rescheduleLocked(t *target) bool {
	if t.busy || t.held {
		return false // settled when the worker (or Drain) is done with it
	}
	now := s.clock.Now()
	due, ok := dueTime(t.schedState(), s.pol, now)
	q := s.heapOf(t)
	if !ok {
		if t.index >= 0 {
			heap.Remove(q, t.index)
		}
		delete(s.targets, t.id)
		delete(s.stuck, t)
		return false
	}
	if t.index < 0 {
		t.due = due
		heap.Push(q, t)
	} else {
		// A target already due keeps its place (and its overdue time)
		// when new hooks arrive, also the place it took at the end of
		// its last turn (see settleLocked), which its oldest hook's
		// window would put ahead.
		if !t.due.After(now) && !due.After(now) {
			due = t.due
		}
		t.due = due
		heap.Fix(q, t.index)
	}
	return t.index == 0 && (s.armed.IsZero() || t.due.Before(s.armed))
}

// resultKind says how a worker's turn at a target ended.
type resultKind int

const (
	// resultFinished: the batch was acknowledged, dead-lettered or
	// discarded; status is the target's new status.
	resultFinished resultKind = iota
	// resultWaiting: the batch stays in flight until next (a retry was
	// recorded, or the claimed batch was not due yet).
	resultWaiting
	// resultEmpty: the store had nothing pending.
	resultEmpty
	// resultAborted: the attempt was cut short by shutdown and not
	// counted.
	resultAborted
	// resultStoreError: the store failed; the target is held back for a
	// retry interval, with what it owes the store, if anything.
	resultStoreError
	// resultDeferred: the target's receiver host was found slow and the
	// slow targets' workers were all taken (see Sender.admit): the batch
	// stays in flight, unsent, and the target waits with the slow ones.
	resultDeferred
)

// result is what a worker reports back to the scheduler.
type result struct {
	kind    resultKind
	status  buffer.TargetStatus // resultFinished
	batchID string              // the batch in flight, when known
	next    time.Time           // its next attempt
	// gone, when set, is to be sent to the gone webhook (the receiver
	// answered 410).
	gone *goneNotice
	// owed, with resultStoreError, is the attempt's outcome that the
	// store failed to record.
	owed *settlement
	// attempted is set when the turn sent the batch and the receiver
	// answered or failed (not shutdown); slow then says whether that took
	// half the send timeout or more, failed whether the batch was not
	// delivered, and host is the receiver it was sent to (receiverKey).
	attempted, slow, failed bool
	host                    string
}

// settleLocked applies a worker's result to t, which the worker just
// released, and schedules t again. version is t.version when the worker
// started. Called with s.mu held.
func (s *Sender) settleLocked(t *target, r result, version uint64, drain bool) {
	if r.kind == resultStoreError {
		if r.owed != nil {
			t.setOwed(r.owed)
		}
		if _, ok := s.stuck[t]; !ok {
			// Each store error moves the target's due time on; the
			// overdue clock keeps running from when it was first due.
			s.stuck[t] = t.due
		}
	} else if r.kind != resultAborted {
		t.setOwed(nil)
		delete(s.stuck, t)
	}
	if r.attempted {
		t.slow = r.slow
	}
	switch r.kind {
	case resultFinished:
		t.clearFlight()
		t.setNotBefore(time.Time{})
		if f := r.status.InFlight; f != nil {
			// The ack claimed the next batch: it is due at once.
			t.setFlight(f.ID, f.NextAttempt)
		}
		if r.status.Version > t.version {
			t.version = r.status.Version
			t.pending, t.oldest, t.gone = r.status.Pending, r.status.Oldest, r.status.Gone
		}
	case resultWaiting, resultDeferred:
		t.setFlight(r.batchID, r.next)
		t.setNotBefore(time.Time{})
		if r.kind == resultDeferred {
			t.slow = true
		}
	case resultEmpty:
		t.clearFlight()
		if t.version == version {
			// No status arrived since the claim: the store's answer is
			// the newest word. Otherwise trust the newer status; at
			// worst the next claim finds nothing again.
			t.pending = 0
		}
	case resultAborted, resultStoreError:
		if r.batchID != "" {
			t.setFlight(r.batchID, r.next)
		}
		if r.kind == resultStoreError {
			t.setNotBefore(s.clock.Now().Add(s.pol.interval))
		}
	}
	// One failed attempt per target and drain: hammering a failing
	// receiver until the deadline helps nobody. That holds also when the
	// failure ended the batch (its last retry, a permanent answer) and
	// the target has hooks left; after a 410 they are dead-lettered
	// without a send, which hammers no one. A target deferred to the slow
	// ones failed nothing: it is sent later in the same drain.
	gaveUp := r.failed && r.gone == nil && t.pending > 0
	if drain && (gaveUp || r.kind != resultFinished && r.kind != resultEmpty && r.kind != resultDeferred) {
		t.held = true
		s.held = append(s.held, t)
		return
	}
	s.rescheduleLocked(t)
	if now := s.clock.Now(); t.index >= 0 && t.due.Before(now) {
		// Its turn is over: a target whose next batch was due already (a
		// backlog in time mode, a remainder whose window ended while the
		// batch before it was out) goes behind the targets due before
		// now, as a full batch claimed by the ack does. Otherwise its
		// oldest hook's window would hand it the worker back ahead of
		// them turn after turn, until its backlog is gone.
		t.due = now
		heap.Fix(s.heapOf(t), t.index)
	}
}

// heapOf is the heap t waits in. t.slow changes only while t is busy,
// out of both.
func (s *Sender) heapOf(t *target) *dueHeap {
	if t.slow {
		return &s.slow
	}
	return &s.queue
}

// farFuture is a time every target is due by: Drain's now.
var farFuture = time.Unix(1<<62, 0)

// popDueLocked removes and returns the target due earliest, if one is due
// at now and may be sent: a slow one only while fewer than slowCap slow
// targets are being sent to (in a drain, see pickLocked). It returns nil
// otherwise. Called with s.mu held.
func (s *Sender) popDueLocked(now time.Time, drain bool) *target {
	q := s.pickLocked(drain)
	if q == nil || (*q)[0].due.After(now) {
		return nil
	}
	return q.popTarget()
}

// nextDueLocked is when the next target may be sent (zero: none waits
// that can be). Called with s.mu held.
func (s *Sender) nextDueLocked() time.Time {
	if q := s.pickLocked(false); q != nil {
		return (*q)[0].due
	}
	return time.Time{}
}

// pickLocked returns the heap whose first target is to be sent next, or
// nil: the slow heap is passed over while slowCap slow targets are being
// sent to, and loses ties. In a drain the cap holds only while an
// ordinary target waits or is being sent to: intake has stopped, so a
// worker kept for the rest would be kept for no one, and the slow
// targets' batches left on disk at the deadline. Called with s.mu held.
func (s *Sender) pickLocked(drain bool) *dueHeap {
	var q *dueHeap
	if len(s.queue) > 0 {
		q = &s.queue
	}
	free := s.slowBusy+s.overtime < s.slowCap || (drain && q == nil && s.busy == s.slowBusy)
	if len(s.slow) > 0 && free && (q == nil || s.slow[0].due.Before(s.queue[0].due)) {
		q = &s.slow
	}
	return q
}

// dueHeap orders targets by due time (then id, for a stable order).
type dueHeap []*target

func (h dueHeap) Len() int { return len(h) }

func (h dueHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].id < h[j].id
}

func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *dueHeap) Push(x any) {
	t := x.(*target)
	t.index = len(*h)
	*h = append(*h, t)
}

func (h *dueHeap) Pop() any {
	old := *h
	n := len(old)
	t := old[n-1]
	old[n-1] = nil
	t.index = -1
	*h = old[:n-1]
	return t
}

// popTarget removes and returns the earliest target.
func (h *dueHeap) popTarget() *target { return heap.Pop(h).(*target) }

// receiverKey names the receiver host of target URL raw for slowHosts:
// its host name in lower case and its port, the scheme's default when it
// has none, so that http://H/a and http://h:80/b are one receiver.
func receiverKey(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "invalid"
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// maxSlowHosts bounds the receiver hosts a Sender remembers as slow: a
// flood of hosts that hang costs little memory, and a host forgotten is
// only found slow again.
const maxSlowHosts = 4096

// slowHosts is a set of receiver hosts (receiverKey) whose last attempt
// took half the send timeout or more, or is still running past it. It
// keeps at most max, dropping the one marked longest ago. Guarded by
// Sender.mu.
type slowHosts struct {
	max   int
	order *list.List // of hosts, the oldest mark first
	at    map[string]*list.Element
}

func newSlowHosts(max int) slowHosts {
	return slowHosts{max: max, order: list.New(), at: make(map[string]*list.Element)}
}

func (h *slowHosts) has(host string) bool {
	_, ok := h.at[host]
	return ok
}

// mark adds host, or makes its mark the newest.
func (h *slowHosts) mark(host string) {
	if e, ok := h.at[host]; ok {
		h.order.MoveToBack(e)
		return
	}
	h.at[host] = h.order.PushBack(host)
	if h.order.Len() > h.max {
		delete(h.at, h.order.Remove(h.order.Front()).(string))
	}
}

func (h *slowHosts) unmark(host string) {
	if e, ok := h.at[host]; ok {
		h.order.Remove(e)
		delete(h.at, host)
	}
}
