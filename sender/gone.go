package sender

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"hookproxy/buffer"
)

// goneNotice is the body of the gone webhook: the target that answered
// 410 Gone and the hooks it refused, so that the app can delete the
// subscription.
type goneNotice struct {
	Target  string   `json:"target"`
	HookIDs []string `json:"hook_ids"`
}

// goneWebhookWaits are the waits between the attempts of a gone webhook:
// a few, growing, then it is logged and dropped. It is a courtesy to the
// app; the dead letters and the gone mark are the record.
var goneWebhookWaits = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second}

// notifyGone POSTs n to the gone webhook, trying again after each of
// s.goneWaits (on the sender's clock) until a 2xx, a permanent answer,
// ctx's end (which also bounds each POST) or the closing of waits: a try
// still to wait for when shutdown begins is dropped. At most Concurrency
// POSTs of gone webhooks are in progress at once; the others wait for
// their turn, and are dropped too when shutdown begins meanwhile.
func (s *Sender) notifyGone(ctx context.Context, waits <-chan struct{}, n goneNotice) {
	if s.goneWebhook == "" {
		return
	}
	body, err := json.Marshal(n)
	if err != nil { // strings only: cannot fail
		s.log.Error("gone webhook", "error", err)
		return
	}
	host := buffer.TargetHost(n.Target)
	id := buffer.NewRandomID(s.clock.Now()) // the same on every attempt
	for attempt := 1; ; attempt++ {
		if !s.takeGoneSlot(ctx, waits) {
			s.goneDropped(host, attempt)
			return
		}
		status, resent, err := s.postGone(ctx, id, body)
		<-s.goneSlots
		out, _ := classify(status, err, attempt > 1 || resent)
		if out == outcomeDelivered {
			s.log.Info("gone webhook sent", "target", host, "hooks", len(n.HookIDs), "attempt", attempt, "status", status)
			if s.onGoneNotified != nil {
				s.onGoneNotified(nil)
			}
			return
		}
		detail := describe(status, err, s.timeout)
		if err != nil && ctx.Err() != nil {
			// Shutdown cut the try (the drain's deadline, or at once
			// without a drain): describe would blame the receiver for
			// a send timeout that had not passed.
			detail = "cut short by shutdown"
		}
		if ctx.Err() != nil || out == outcomePermanent || attempt > len(s.goneWaits) || isClosed(waits) {
			s.log.Warn("gone webhook not delivered; the dead letters keep the hooks", "target", host,
				"attempt", attempt, "status", status, "error", detail)
			if s.onGoneNotified != nil {
				s.onGoneNotified(fmt.Errorf("gone webhook: %s", detail))
			}
			return
		}
		s.log.Warn("gone webhook failed; trying again", "target", host, "attempt", attempt,
			"status", status, "error", detail, "wait", s.goneWaits[attempt-1])
		t := s.clock.NewTimer(s.goneWaits[attempt-1])
		select {
		case <-t.C():
			continue
		case <-ctx.Done():
		case <-waits:
		}
		t.Stop()
		s.goneDropped(host, attempt)
		return
	}
}

// goneDropped reports a gone webhook dropped because shutdown began.
func (s *Sender) goneDropped(host string, attempt int) {
	s.log.Warn("gone webhook given up at shutdown", "target", host, "attempt", attempt)
	if s.onGoneNotified != nil {
		s.onGoneNotified(errShutdown)
	}
}

// takeGoneSlot waits for one of s.goneSlots, which the caller gives back
// after its POST; false when ctx ended or waits closed first.
func (s *Sender) takeGoneSlot(ctx context.Context, waits <-chan struct{}) bool {
	select {
	case s.goneSlots <- struct{}{}:
		return true
	default:
	}
	if s.onGoneQueued != nil {
		s.onGoneQueued()
	}
	select {
	case s.goneSlots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	case <-waits:
		return false
	}
}

// errShutdown reports a gone webhook dropped because shutdown began.
var errShutdown = errors.New("gone webhook given up at shutdown")

// closed is a closed channel: the waits of a gone webhook met by Drain,
// which never waits.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// postGone makes one attempt of the gone webhook whose id is id: in
// Idempotency-Key and, with signing secrets, in its signature, as on a
// delivery. resent says net/http sent it again by itself (see
// resendTrace).
func (s *Sender) postGone(ctx context.Context, id string, body []byte) (status int, resent bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ctx, sentAgain := resendTrace(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.goneWebhook, bytes.NewReader(body))
	if err != nil {
		return 0, false, fmt.Errorf("%w: %w", errInvalidRequest, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", s.userAgent)
	req.Header.Set("Idempotency-Key", id)
	s.signer.sign(req.Header, id, s.clock.Now(), body)
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, false, err
	}
	closeBody(resp)
	return resp.StatusCode, sentAgain.Load(), nil
}
