package sender

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"hookproxy/buffer"
)

// maxDrainBody bounds how much of a response body is read before it is
// closed: reading it to the end lets the connection be reused, and the
// bound keeps a chatty receiver from costing more than that.
const maxDrainBody = 64 << 10

// closeBody reads what is left of resp's body, up to maxDrainBody, and
// closes it. The body of a 101 Switching Protocols is the connection
// itself, handed over by net/http: the request's context (the send
// timeout) no longer bounds a read of it, so it is closed unread, which
// closes the connection.
func closeBody(resp *http.Response) {
	if _, hijacked := resp.Body.(io.Writer); !hijacked {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrainBody))
	}
	_ = resp.Body.Close()
}

// deliver takes one turn at a target: it claims the target's batch (the
// one in flight, or a new one), makes one attempt, and records the
// outcome in the store. In drain mode the batch's retry time is ignored.
// A target marked gone gets no attempt: the batch is given up at once.
// When owed holds the outcome of the batch's last attempt, which the
// store failed to record, the turn records it and sends nothing. a is the
// attempt at an ordinary target (nil for a slow one), which admit may
// turn away before it sends: the batch stays in flight, unsent.
func (s *Sender) deliver(ctx context.Context, id buffer.TargetID, drain, gone bool, owed *settlement, a *attempt) result {
	if ctx.Err() != nil {
		return result{kind: resultAborted}
	}
	b, err := s.store.Claim(id, s.pol.claim, s.pol.maxBytes)
	if errors.Is(err, buffer.ErrNoHooks) {
		return result{kind: resultEmpty}
	}
	if err != nil {
		s.log.Error("claim batch", "target_id", uint64(id), "error", err)
		return result{kind: resultStoreError}
	}
	host := buffer.TargetHost(b.Target)
	if owed != nil && owed.batchID == b.ID {
		return s.settle(id, b, host, *owed)
	}
	if gone {
		// Dead-lettered without a send (f.At zero: no final attempt) until
		// an operator clears the mark.
		return s.settle(id, b, host, settlement{
			batchID: b.ID, kind: settleGiveUp, reason: ReasonGone, attempt: b.Attempts,
			f: buffer.Failure{Status: b.LastStatus, Error: "not sent: the target is marked gone (it answered 410 Gone)"},
		})
	}
	res := result{batchID: b.ID, next: b.NextAttempt}
	if !drain && b.NextAttempt.After(s.clock.Now()) {
		// A status older than our own record scheduled the target early;
		// the store's record of the retry time wins.
		res.kind = resultWaiting
		return res
	}
	receiver := receiverKey(b.Target)
	if a != nil && !s.admit(a, receiver) {
		res.kind = resultDeferred
		return res
	}

	attempt := b.Attempts + 1
	start := s.clock.Now()
	resp, err := s.send(ctx, b, start)
	end := s.clock.Now()
	d := end.Sub(start)
	if err != nil && ctx.Err() != nil {
		// Shutdown, not the receiver: the attempt is not counted and the
		// batch stays in flight for Drain or the next start.
		s.log.Info("delivery attempt cut short by shutdown", "batch_id", b.ID, "target", host, "attempt", attempt)
		res.kind = resultAborted
		return res
	}
	// A resumed batch may have gone out under its key before the restart.
	out, reason := classify(resp.status, err, attempt > 1 || b.Resumed || resp.resent)
	detail := describe(resp.status, err, s.timeout)
	if resp.redirect != "" && out == outcomePermanent {
		detail = fmt.Sprintf("redirect to %s not followed (%s)", resp.redirect, detail)
	}
	if resp.status == http.StatusRequestEntityTooLarge && len(b.Hooks) > 1 {
		// Its hooks may pass in smaller batches: say how, for the replay.
		detail += fmt.Sprintf(" for a batch of %d hooks: smaller batches (HOOKPROXY_BATCH_MAX_BYTES, HOOKPROXY_BATCH_SIZE) may pass, then replay", len(b.Hooks))
	}
	attrs := []slog.Attr{
		slog.String("batch_id", b.ID),
		slog.String("target", host),
		slog.Int("attempt", attempt),
		slog.Int("hooks", len(b.Hooks)),
		slog.Int("status", resp.status),
		slog.Duration("duration", d),
		slog.String("outcome", out.String()),
	}
	level := slog.LevelInfo
	if out != outcomeDelivered {
		level = slog.LevelWarn
		attrs = append(attrs, slog.String("error", detail))
	}
	s.log.LogAttrs(context.Background(), level, "delivery attempt", attrs...)
	if s.onAttempt != nil {
		s.onAttempt(out.String(), resp.status, d, len(b.Hooks))
	}

	st := settlement{batchID: b.ID, attempt: attempt, f: buffer.Failure{At: end, Status: resp.status, Error: detail}}
	switch out {
	case outcomeDelivered:
		st.kind = settleAck
	case outcomeRetryable:
		fa := failedAttempt{Attempts: attempt, Created: b.Created, At: end}
		if honoursRetryAfter(resp.status) {
			fa.RetryAfter, fa.HasRetryAfter = parseRetryAfter(resp.header.Get("Retry-After"), end)
		}
		next, giveUp := nextAttempt(s.pol, fa, s.rand())
		switch {
		case giveUp == "":
			st.kind, st.f.Next = settleRetry, next
		case giveUp == ReasonMaxAge:
			st.f.Error = fmt.Sprintf("%s; the batch is %v old", detail, end.Sub(b.Created).Round(time.Second))
			fallthrough
		default:
			st.kind, st.reason = settleGiveUp, giveUp
		}
	default:
		st.kind, st.reason = settleGiveUp, reason
		if reason == ReasonGone {
			st.kind = settleGone
		}
	}
	r := s.settle(id, b, host, st)
	r.attempted, r.failed, r.host = true, out != outcomeDelivered, receiver
	r.slow = d >= s.timeout/2 || errors.Is(err, context.DeadlineExceeded)
	return r
}

// settleKind is what the store is to record of an attempt.
type settleKind int

const (
	settleAck    settleKind = iota // delivered: remove the batch
	settleRetry                    // record the failed attempt and the next one
	settleGiveUp                   // dead-letter or discard the batch
	settleGone                     // the same, and mark the target gone
)

// settlement is the outcome of a batch's attempt, to be recorded in the
// store. A target keeps it while the store fails to record it.
type settlement struct {
	batchID string
	kind    settleKind
	reason  string // settleGiveUp, settleGone: why the batch is given up
	attempt int    // the attempt's number (the batch's attempts so far)
	f       buffer.Failure
}

// settle records st for batch b of target id.
func (s *Sender) settle(id buffer.TargetID, b *buffer.Batch, host string, st settlement) result {
	// The outcome of an attempt is kept: the next turn records it again
	// and sends nothing. One decided without an attempt (a gone target's
	// batch) is decided again, as the mark may have been cleared since.
	owe := func(what string, err error, args ...any) result {
		args = append(args, "batch_id", b.ID, "target", host, "error", fmt.Errorf("send batch %s: %w", b.ID, err))
		s.log.Error(what, args...)
		res := result{kind: resultStoreError, batchID: b.ID, next: b.NextAttempt}
		if !st.f.At.IsZero() {
			res.owed = &st
		}
		return res
	}
	switch st.kind {
	case settleAck:
		status, err := s.store.Ack(id, b.ID, s.pol.nextClaim(b.Cut))
		if err != nil {
			return owe("acknowledge batch", err)
		}
		if s.onDelivered != nil {
			s.onDelivered(len(b.Hooks))
		}
		return result{kind: resultFinished, status: status}
	case settleRetry:
		if err := s.store.RecordAttempt(id, b.ID, st.f); err != nil {
			return owe("record attempt", err)
		}
		return result{kind: resultWaiting, batchID: b.ID, next: st.f.Next}
	}

	// Given up: dead-lettered or discarded, as configured.
	gone := st.kind == settleGone
	var (
		status buffer.TargetStatus
		err    error
		action = GiveUpDeadLetter
	)
	// As after a delivery: the rest of a batch cut by bytes goes now.
	next := s.pol.nextClaim(b.Cut)
	switch {
	case s.discard && gone:
		action = GiveUpDiscard
		status, err = s.store.DiscardGone(id, b.ID)
	case s.discard:
		action = GiveUpDiscard
		status, err = s.store.Discard(id, b.ID, next)
	case gone:
		status, err = s.store.GiveUpGone(id, b.ID, st.reason, st.f)
	default:
		status, err = s.store.GiveUp(id, b.ID, st.reason, st.f, next)
	}
	if err != nil {
		return owe("give up batch", err, "action", action)
	}
	s.log.Warn("batch given up", "batch_id", b.ID, "target", host, "action", action,
		"reason", st.reason, "detail", st.f.Error, "attempts", st.attempt, "hooks", len(b.Hooks))
	if gone {
		s.log.Warn("target marked gone: its hooks are dead-lettered until the mark is cleared",
			"target", host, "target_id", uint64(id), "batch_id", b.ID)
	}
	if s.onGivenUp != nil {
		s.onGivenUp(st.reason, len(b.Hooks))
	}
	res := result{kind: resultFinished, status: status}
	if gone {
		n := goneNotice{Target: b.Target, HookIDs: make([]string, len(b.Hooks))}
		for i := range b.Hooks {
			n.HookIDs[i] = b.Hooks[i].ID
		}
		res.gone = &n
	}
	return res
}

// response is what an attempt keeps of the receiver's answer.
type response struct {
	status int
	header http.Header
	// redirect is the host a 3xx pointed at (Location resolved against
	// the request; "" when none).
	redirect string
	// resent says net/http sent the request again by itself within the
	// attempt (see resendTrace): the receiver may have seen its
	// Idempotency-Key before the copy it answered.
	resent bool
}

// send makes one attempt, at now, and returns the receiver's answer
// (its zero value for a network error).
func (s *Sender) send(ctx context.Context, b *buffer.Batch, now time.Time) (response, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ctx, resent := resendTrace(ctx)
	req, err := s.newRequest(ctx, b, now)
	if err != nil {
		return response{}, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		// A redirect the policy refused still returns its response
		// (body closed).
		if resp != nil && errors.Is(err, errRedirect) {
			return response{status: resp.StatusCode, header: resp.Header}, err
		}
		if bl, ok := errors.AsType[*badLocationError](err); ok {
			return response{status: bl.status}, err
		}
		return response{}, err
	}
	closeBody(resp)
	r := response{status: resp.StatusCode, header: resp.Header, resent: resent.Load()}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		if loc, err := resp.Location(); err == nil && loc.Host != "" {
			r.redirect = loc.Host
		}
	}
	return r, nil
}

// newRequest builds the request of a batch. With batching on, it is one
// POST whose body is the JSON array of the hook bodies; without, it is
// the hook as the app sent it (method, end-to-end headers, body). Either
// way it carries the batch id as Idempotency-Key, which also lets
// net/http resend it by itself when a kept-alive connection turns out to
// be dead, and, with signing secrets, the Standard Webhooks signature
// headers for the attempt's time now.
func (s *Sender) newRequest(ctx context.Context, b *buffer.Batch, now time.Time) (*http.Request, error) {
	u, err := url.Parse(b.Target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("target is not an http or https URL: %w", errInvalidRequest)
	}
	if len(b.Hooks) == 0 {
		return nil, fmt.Errorf("batch holds no hooks: %w", errInvalidRequest)
	}
	var (
		req  *http.Request
		body []byte
	)
	// A batch claimed under a batching configuration may hold several
	// hooks after a restart without one: it is still sent whole.
	if s.pol.batching() || len(b.Hooks) > 1 {
		body = buildBatch(b.Hooks)
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, b.Target, bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errInvalidRequest, err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", s.userAgent)
		req.Header.Set("X-Hookproxy-Batch-Size", strconv.Itoa(len(b.Hooks)))
	} else {
		h := &b.Hooks[0]
		method := h.Method
		if method == "" {
			method = http.MethodPost
		}
		body = h.Body
		req, err = http.NewRequestWithContext(ctx, method, b.Target, bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errInvalidRequest, err)
		}
		if h.Header != nil {
			req.Header = h.Header.Clone()
		}
		if req.Header.Get("User-Agent") == "" {
			req.Header.Set("User-Agent", s.userAgent)
		}
	}
	req.Header.Set("Idempotency-Key", b.ID)
	req.Header.Set("X-Hookproxy-Batch-Id", b.ID)
	s.signer.sign(req.Header, b.ID, now, body)
	return req, nil
}

// buildBatch returns the JSON array of the hook bodies in arrival order.
// The bodies are JSON already and are copied byte for byte, not
// re-encoded. So that one bad hook cannot make the whole batch unreadable,
// an empty body becomes null and a body that is not valid JSON becomes a
// JSON string. A body that is not UTF-8 is read as ISO-8859-1, the
// encoding python's http.client gives a str body (requests'
// data=json.dumps(..., ensure_ascii=False)), and copied in UTF-8: a batch
// is one JSON text, which must be UTF-8 (RFC 8259 8.1), and receivers
// refuse the whole batch otherwise.
func buildBatch(hooks []buffer.Hook) []byte {
	n := 2 + len(hooks)
	for i := range hooks {
		n += len(hooks[i].Body)
	}
	out := make([]byte, 0, n)
	out = append(out, '[')
	for i := range hooks {
		if i > 0 {
			out = append(out, ',')
		}
		body := hooks[i].Body
		if !utf8.Valid(body) {
			body = latin1ToUTF8(body)
		}
		switch {
		case len(bytes.TrimSpace(body)) == 0:
			out = append(out, "null"...)
		case json.Valid(body):
			out = append(out, body...)
		default:
			q, _ := json.Marshal(string(body)) // a string always encodes
			out = append(out, q...)
		}
	}
	return append(out, ']')
}

// latin1ToUTF8 returns b, read as ISO-8859-1 (each byte one code point),
// in UTF-8. Every byte sequence is ISO-8859-1 text; JSON stays JSON, as
// bytes above 0x7f can only stand inside its strings.
func latin1ToUTF8(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/2)
	for _, c := range b {
		out = utf8.AppendRune(out, rune(c))
	}
	return out
}

// resendTrace returns ctx with a trace that sets the flag when net/http
// sends the request again by itself after a copy was written and got no
// answer: it does that for a request with an Idempotency-Key when a
// kept-alive connection closes before the first byte of the answer (a
// receiver's worker killed mid-request, a load balancer's cut), so the
// receiver may still be processing the first copy. A copy whose write
// failed is none; an answered one (a redirect followed) is no resend. The
// flag may be set for nothing (a copy whose last bytes never left, a hop
// after an answer that came before its request was written whole): a
// 409 is then retried where it would have been dead-lettered.
func resendTrace(ctx context.Context) (context.Context, *atomic.Bool) {
	var unanswered atomic.Bool
	resent := new(atomic.Bool)
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) {
			if unanswered.Load() {
				resent.Store(true)
			}
		},
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				unanswered.Store(true)
			}
		},
		GotFirstResponseByte: func() { unanswered.Store(false) },
	}), resent
}

// describe is a readable cause of a failed attempt, for logs and the
// dead-letter store. Network errors lose the *url.Error wrapper, which
// would repeat the full target URL (path and query included).
func describe(status int, err error, timeout time.Duration) string {
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "no response within " + timeout.String()
		}
		if ue, ok := errors.AsType[*url.Error](err); ok {
			return ue.Err.Error()
		}
		return err.Error()
	}
	if text := http.StatusText(status); text != "" {
		return fmt.Sprintf("HTTP %d %s", status, text)
	}
	return "HTTP " + strconv.Itoa(status)
}
