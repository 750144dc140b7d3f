package admin

import (
	"fmt"
	"time"
)

// Readiness checks, as named in Reason.Check.
const (
	CheckStore    = "store"
	CheckSender   = "sender"
	CheckQuota    = "quota"
	CheckDraining = "draining"
)

// DefaultQuotaHighWater is the share of the pending-bytes quota past which
// hookproxy reports itself not ready, when Options.QuotaHighWater is zero.
const DefaultQuotaHighWater = 0.9

// Probe is what readiness is decided from, gathered at one instant.
type Probe struct {
	// StoreErr is why the store does not accept writes (nil: it does).
	StoreErr error
	// Draining is set once shutdown has begun.
	Draining bool
	// Overdue is how long the most overdue batch has been due without an
	// attempt (Progress.OldestDue).
	Overdue time.Duration
	// PendingBytes is the body bytes of the hooks not yet delivered.
	PendingBytes int64
}

// ReadyPolicy holds the thresholds readiness is judged by. The zero value
// checks only the store and draining.
type ReadyPolicy struct {
	// StallAfter is how long a batch may stay due without an attempt
	// before the sender counts as stalled. Zero: no stall check.
	StallAfter time.Duration
	// MaxPendingBytes is the pending-bytes quota. Zero: no quota check.
	MaxPendingBytes int64
	// QuotaHighWater is the share of MaxPendingBytes that counts as
	// nearly full, in (0, 1]. Zero: DefaultQuotaHighWater.
	QuotaHighWater float64
}

// Readiness is the answer of /readyz.
type Readiness struct {
	Ready bool `json:"ready"`
	// Reasons says why not, one entry per failing check; empty (never
	// null in JSON) when ready.
	Reasons []Reason `json:"reasons"`
}

// Reason is one failing readiness check.
type Reason struct {
	// Check is CheckStore, CheckSender, CheckQuota or CheckDraining.
	Check   string `json:"check"`
	Message string `json:"message"`
}

// Evaluate decides readiness from a probe: ready when the store accepts
// writes, the sender is making progress, the quota is not nearly full and
// shutdown has not begun. It is a pure function.
func Evaluate(p Probe, pol ReadyPolicy) Readiness {
	reasons := []Reason{}
	if p.StoreErr != nil {
		reasons = append(reasons, Reason{CheckStore, "store does not accept writes: " + p.StoreErr.Error()})
	}
	if pol.StallAfter > 0 && p.Overdue > pol.StallAfter {
		reasons = append(reasons, Reason{CheckSender, fmt.Sprintf(
			"a batch has been due for %s without an attempt (stall after %s)",
			p.Overdue.Round(time.Millisecond), pol.StallAfter)})
	}
	if pol.MaxPendingBytes > 0 {
		hw := pol.QuotaHighWater
		if hw <= 0 || hw > 1 {
			hw = DefaultQuotaHighWater
		}
		if float64(p.PendingBytes) >= hw*float64(pol.MaxPendingBytes) {
			reasons = append(reasons, Reason{CheckQuota, fmt.Sprintf(
				"pending bytes %d of quota %d (%.0f%%, limit %.0f%%)",
				p.PendingBytes, pol.MaxPendingBytes,
				100*float64(p.PendingBytes)/float64(pol.MaxPendingBytes), 100*hw)})
		}
	}
	if p.Draining {
		reasons = append(reasons, Reason{CheckDraining, "shutting down: intake stopped, draining pending batches"})
	}
	return Readiness{Ready: len(reasons) == 0, Reasons: reasons}
}
