package sender

import (
	"errors"
	"net/http"
	"time"
)

// policy is the normalized batching and retry configuration.
type policy struct {
	size     int           // BatchSize; 0: no size trigger
	window   time.Duration // BatchTime; 0: no time trigger
	maxWait  time.Duration // size-only mode: longest wait of a remainder
	claim    int           // most hooks one batch holds
	retries  int           // retries after the first attempt
	interval time.Duration // RetryInterval
}

// batching reports whether hooks are grouped into JSON-array batches;
// without it each hook is forwarded alone, as the app sent it.
func (p policy) batching() bool { return p.size > 0 || p.window > 0 }

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
}

// dueTime says when the target's next batch is due, as a pure function
// of its state, the policy and now; false means nothing is pending and
// the target needs no place in the schedule. A due time at or before now
// means "send now"; it may lie in the past (after a restart, say), which
// keeps the most overdue target first.
func dueTime(st schedState, p policy, now time.Time) (time.Time, bool) {
	var due time.Time
	switch {
	case st.InFlight:
		// One batch in flight per target: it goes first, at its retry time.
		due = st.NextAttempt
		if due.IsZero() {
			due = now
		}
	case st.Pending <= 0:
		return time.Time{}, false
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

// retryDelay says whether a batch that has failed `failed` attempts gets
// another one, and how long after the failure. It is the one place of the
// retry policy (a fixed interval today; exponential backoff can grow here).
func retryDelay(failed int, p policy) (time.Duration, bool) {
	if failed > p.retries {
		return 0, false
	}
	return p.interval, true
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

// classify maps an attempt's HTTP status or error to an outcome: 2xx is
// delivered; a network error, a timeout, 408, 429 and 5xx are worth a
// retry; everything else (3xx, since redirects are not followed, and the
// other 4xx) is permanent.
func classify(status int, err error) outcome {
	switch {
	case errors.Is(err, errInvalidRequest):
		return outcomePermanent
	case err != nil:
		return outcomeRetryable
	case status >= 200 && status < 300:
		return outcomeDelivered
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500:
		return outcomeRetryable
	default:
		return outcomePermanent
	}
}
