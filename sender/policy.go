package sender

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"hookproxy/buffer"
	"hookproxy/egress"
)

// policy is the normalized batching and retry configuration.
type policy struct {
	size     int           // BatchSize; 0: no size trigger
	window   time.Duration // BatchTime; 0: no time trigger
	maxWait  time.Duration // size-only mode: longest wait of a remainder
	claim    int           // most hooks one batch holds
	maxBytes int64         // most body bytes one batch holds (0: no limit)

	retries     int           // retries after the first attempt; RetryForever: no limit
	backoff     string        // BackoffExponential or BackoffFixed
	interval    time.Duration // RetryInterval: the fixed wait, or the first exponential one
	maxInterval time.Duration // cap of a wait, Retry-After included (>= interval)
	maxAge      time.Duration // give up on a batch this old after a failure (0: no limit)
}

// batching reports whether hooks are grouped into JSON-array batches;
// without it each hook is forwarded alone, as the app sent it.
func (p policy) batching() bool { return p.size > 0 || p.window > 0 }

// nextClaim says when acknowledging a batch also claims the target's next
// one: when what remains is due at once whatever the time (a full batch by
// size, or any hook without batching), matching dueTime, and when the
// acknowledged batch was cut by the byte limit (what it left behind was
// due with it). A time window below size is left to the schedule.
func (p policy) nextClaim(cut bool) buffer.NextClaim {
	switch {
	case !p.batching() || cut:
		return buffer.NextClaim{MinHooks: 1, MaxHooks: p.claim, MaxBytes: p.maxBytes}
	case p.size > 0:
		return buffer.NextClaim{MinHooks: p.size, MaxHooks: p.claim, MaxBytes: p.maxBytes}
	default:
		return buffer.NextClaim{}
	}
}

// schedState is what the due policy needs to know of a target.
type schedState struct {
	// Pending counts the hooks not yet acknowledged, in-flight ones
	// included.
	Pending int
	// Oldest is the arrival of the oldest pending hook.
	Oldest time.Time
	// InFlight is set while a claimed batch awaits its next attempt.
	InFlight bool
	// NextAttempt is when the in-flight batch is to be tried again (zero:
	// at once).
	NextAttempt time.Time
	// NotBefore holds the target back after a store error.
	NotBefore time.Time
	// Gone is set while the target is marked gone: what it has pending
	// is dead-lettered at once, without a send.
	Gone bool
}

// dueTime says when the target's next batch is due, as a pure function
// of its state, the policy and now; false means nothing is pending and
// the target needs no place in the schedule. A due time at or before now
// means "send now"; it may lie in the past (after a restart, say), which
// keeps the most overdue target first.
func dueTime(st schedState, p policy, now time.Time) (time.Time, bool) {
	var due time.Time
	switch {
	case st.Pending <= 0 && !st.InFlight:
		return time.Time{}, false
	case st.Gone:
		// Nothing is sent to a gone target, so there is nothing to wait
		// for: its hooks go to the dead-letter store at once.
		due = now
	case st.InFlight:
		// One batch in flight per target: it goes first, at its retry time.
		due = st.NextAttempt
		if due.IsZero() {
			due = now
		}
	default:
		oldest := st.Oldest
		if oldest.IsZero() {
			oldest = now
		}
		switch {
		case !p.batching():
			due = now
		case p.size > 0 && st.Pending >= p.size:
			due = now
		case p.window > 0:
			// Time only, or both below size: the first hook of an idle
			// target opened the window.
			due = oldest.Add(p.window)
		default:
			// Size only, below size: the remainder still goes out after a
			// bounded wait (the old deliverer never sent it).
			due = oldest.Add(p.maxWait)
		}
	}
	if due.Before(st.NotBefore) {
		due = st.NotBefore
	}
	return due, true
}

// failedAttempt is what the retry policy needs to know of a batch whose
// attempt just failed with a retryable error.
type failedAttempt struct {
	// Attempts counts the attempts made so far, this one included.
	Attempts int
	// Created is when the batch was formed (its first claim).
	Created time.Time
	// At is when the attempt failed.
	At time.Time
	// RetryAfter is the receiver's Retry-After, as a wait from At; only
	// meaningful when HasRetryAfter.
	RetryAfter    time.Duration
	HasRetryAfter bool
}

// nextAttempt says when a batch whose attempt failed with a retryable
// error is tried again, or why it is given up (ReasonRetriesExhausted,
// ReasonMaxAge; "" when it is tried again). It is a pure function of its
// arguments; rnd, in [0, 1), draws the jitter.
//
// The wait is backoff's; a Retry-After may lengthen it, never shorten
// it, and never past p.maxInterval. The age limit is checked at the
// failure: a batch at least p.maxAge old is given up whatever its
// count, and otherwise gets its next attempt even when that comes after
// the limit.
func nextAttempt(p policy, f failedAttempt, rnd float64) (time.Time, string) {
	if p.retries != RetryForever && f.Attempts > p.retries {
		return time.Time{}, ReasonRetriesExhausted
	}
	if p.maxAge > 0 && !f.Created.IsZero() && f.At.Sub(f.Created) >= p.maxAge {
		return time.Time{}, ReasonMaxAge
	}
	wait := backoff(f.Attempts, p, rnd)
	if f.HasRetryAfter {
		wait = max(wait, min(f.RetryAfter, p.maxInterval))
	}
	return f.At.Add(wait), ""
}

// jitter is the spread of an exponential wait: +-20%, so targets that
// failed together do not retry in lockstep.
const jitter = 0.2

// backoff is the wait after the failed-th failed attempt (from 1). Fixed:
// always p.interval, with no jitter (the old batch deliverer's exact
// schedule). Exponential: p.interval doubled for each failure after the
// first, capped at p.maxInterval, then drawn uniformly by rnd (in
// [0, 1)) from [0.8 d, min(1.2 d, p.maxInterval)], so that a wait never
// passes the cap and waits at the cap are spread too.
func backoff(failed int, p policy, rnd float64) time.Duration {
	if p.backoff == BackoffFixed {
		return p.interval
	}
	d := p.interval
	// Doubling stops at the cap, so this loop runs some 60 times at most
	// even when retries are unlimited.
	for i := 1; i < failed && d < p.maxInterval; i++ {
		if d > p.maxInterval/2 {
			d = p.maxInterval
			break
		}
		d *= 2
	}
	d = min(d, p.maxInterval)
	// In floating point, so that 1.2 d cannot overflow a Duration.
	lo := float64(d) * (1 - jitter)
	hi := min(float64(d)*(1+jitter), float64(p.maxInterval))
	rnd = min(max(rnd, 0), 1)
	return time.Duration(lo + rnd*(hi-lo))
}

// parseRetryAfter reads a Retry-After header value, in delay-seconds or
// as an HTTP date, as a wait from now. A date in the past is a wait of
// zero; a value that is neither form is ignored (false).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(1<<62/time.Second) {
			// More digits than a Duration holds: as long as can be, and
			// the cap decides.
			return time.Duration(1<<63 - 1), true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

func isDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// honoursRetryAfter reports whether a Retry-After on a response with
// this status is taken into account.
func honoursRetryAfter(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable
}

// outcome classifies one delivery attempt.
type outcome int

const (
	outcomeDelivered outcome = iota
	outcomeRetryable
	outcomePermanent
)

// String is the outcome's name in logs and in OnAttempt.
func (o outcome) String() string {
	switch o {
	case outcomeDelivered:
		return OutcomeDelivered
	case outcomeRetryable:
		return OutcomeRetryable
	default:
		return OutcomePermanent
	}
}

// errInvalidRequest marks a batch that can never be sent as it is (a
// target URL that does not parse, say): retrying would not help.
var errInvalidRequest = errors.New("invalid request")

// errRedirect marks a redirect the redirect policy refused to follow.
var errRedirect = errors.New("not followed")

// classify maps an attempt's HTTP status or error to an outcome and, for
// a permanent one, the reason it is given up with. 2xx is delivered; a
// network error, a timeout, 408, 425, 429 and 5xx are worth a retry; a
// destination the egress guard refuses, 410 Gone, any other 3xx or 4xx,
// a refused redirect and a request that cannot be built are permanent.
// resent says the request's Idempotency-Key went out, or may have gone
// out, before (a retry, a copy net/http sent again by itself: see
// resendTrace, or a batch in flight at start): then 409
// is worth a retry too, as a receiver that follows the
// Idempotency-Key draft (draft-ietf-httpapi-idempotency-key-header)
// answers it while it still processes an earlier attempt under that key,
// one that outlasted the send timeout, say.
func classify(status int, err error, resent bool) (outcome, string) {
	switch {
	case errors.Is(err, errInvalidRequest):
		return outcomePermanent, ReasonInvalid
	case errors.Is(err, egress.ErrBlocked):
		return outcomePermanent, ReasonBlocked
	case errors.Is(err, errRedirect):
		return outcomePermanent, ReasonStatus
	case err != nil:
		return outcomeRetryable, ""
	case status >= 200 && status < 300:
		return outcomeDelivered, ""
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly,
		status == http.StatusTooManyRequests, status >= 500:
		return outcomeRetryable, ""
	case status == http.StatusConflict && resent:
		return outcomeRetryable, ""
	case status == http.StatusGone:
		return outcomePermanent, ReasonGone
	default:
		return outcomePermanent, ReasonStatus
	}
}
