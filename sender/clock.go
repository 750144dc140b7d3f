package sender

import "time"

// Clock is the sender's source of time. Scheduling reads only this clock,
// so tests drive time with a fake one and never sleep. The per-attempt
// SendTimeout is the exception: it bounds real network I/O and runs on
// real time.
type Clock interface {
	Now() time.Time
	// NewTimer returns a started timer that fires once, d from now.
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer with the semantics of *time.Timer since Go
// 1.23: after Stop or Reset returns, no value from before the call is
// delivered on C.
type Timer interface {
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it was
	// active.
	Stop() bool
	// Reset re-arms the timer to fire d from now; it reports whether it
	// was active.
	Reset(d time.Duration) bool
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }
