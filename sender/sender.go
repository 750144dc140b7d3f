// Package sender delivers the hooks kept in the buffer to their receivers.
//
// It decides when a target's batch is due (by size, by time, both, or
// each hook alone), claims the batch from the store, sends it (signed,
// when secrets are set, through a client whose every dial the egress
// guard checks), classifies the outcome, schedules retries (fixed or
// exponential backoff, Retry-After), marks targets that answer 410 Gone
// and gives up to the dead-letter store. The policy itself (due times,
// backoff, classification) is pure functions in policy.go.
//
// One scheduler serves every target: a min-heap of due times and a single
// timer for the earliest, so idle targets cost a small heap entry and no
// goroutine or timer. At most Options.Concurrency batches are sent at
// once, never two of the same target, and a slow receiver holds only its
// own target back.
package sender

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"hookproxy/buffer"
	"hookproxy/egress"
	"hookproxy/quickack"
)

// Store is what the sender needs of the durable buffer; *buffer.Store
// implements it.
type Store interface {
	// Targets returns the status of every target with pending hooks or a
	// batch in flight.
	Targets() ([]buffer.TargetStatus, error)
	// Claim returns the target's in-flight batch (same id, same hooks)
	// when there is one, and otherwise claims up to maxHooks hooks from
	// the head of its FIFO. It returns buffer.ErrNoHooks when nothing is
	// pending.
	Claim(id buffer.TargetID, maxHooks int, maxBytes int64) (*buffer.Batch, error)
	// RecordAttempt records a failed attempt of the in-flight batch and
	// when the next one is due.
	RecordAttempt(id buffer.TargetID, batchID string, f buffer.Failure) error
	// Ack removes the delivered batch and, when next asks for it and
	// enough hooks remain, claims the next one in the same write (the
	// status then has it as InFlight).
	Ack(id buffer.TargetID, batchID string, next buffer.NextClaim) (buffer.TargetStatus, error)
	// Discard removes the batch without keeping it.
	Discard(id buffer.TargetID, batchID string, next buffer.NextClaim) (buffer.TargetStatus, error)
	// GiveUp moves the batch to the dead-letter store; f.At zero means
	// it is given up without a final attempt.
	GiveUp(id buffer.TargetID, batchID, reason string, f buffer.Failure, next buffer.NextClaim) (buffer.TargetStatus, error)
	// GiveUpGone and DiscardGone are GiveUp and Discard for a batch that
	// got 410 Gone: they set the target's gone mark in the same write.
	GiveUpGone(id buffer.TargetID, batchID, reason string, f buffer.Failure) (buffer.TargetStatus, error)
	DiscardGone(id buffer.TargetID, batchID string) (buffer.TargetStatus, error)
}

// Values of Options.OnGiveUp.
const (
	// GiveUpDeadLetter keeps a given-up batch in the dead-letter store.
	GiveUpDeadLetter = "dead-letter"
	// GiveUpDiscard drops a given-up batch, with a warning in the log.
	GiveUpDiscard = "discard"
)

// Reasons passed to Store.GiveUp and Options.OnGiveUp.
const (
	// ReasonRetriesExhausted: every allowed attempt failed with a
	// retryable error (network error, timeout, 408, 425, 429, 5xx, 409
	// to a retry).
	ReasonRetriesExhausted = "retries-exhausted"
	// ReasonMaxAge: an attempt failed with a retryable error when the
	// batch was already Options.RetryMaxAge old.
	ReasonMaxAge = "max-age"
	// ReasonStatus: the receiver answered a status that no retry can fix
	// (a 3xx that is not followed, or a 4xx other than 408, 410, 425 and
	// 429, or a 409 to a first attempt sent once), or a redirect could
	// not be followed.
	ReasonStatus = "status"
	// ReasonGone: the receiver answered 410 Gone, or the target was
	// already marked gone and the batch was not sent.
	ReasonGone = "gone"
	// ReasonBlocked: the egress guard refused the target's address (or a
	// redirect's); it is never retried.
	ReasonBlocked = "blocked"
	// ReasonInvalid: the batch cannot be sent at all (the target is not an
	// http or https URL).
	ReasonInvalid = "invalid-request"
)

// Values of Options.Backoff.
const (
	// BackoffExponential doubles the wait after each failed attempt, from
	// RetryInterval up to RetryMaxInterval, with +-20% jitter.
	BackoffExponential = "exponential"
	// BackoffFixed waits RetryInterval after every failed attempt, as the
	// old batch deliverer did.
	BackoffFixed = "fixed"
)

// RetryForever as Options.Retries retries a batch until it is delivered
// (or is Options.RetryMaxAge old, or fails permanently).
const RetryForever = -1

// Outcomes passed to Options.OnAttempt. An attempt that fails with a
// retryable error is "retryable" also when it was the last one allowed.
const (
	// OutcomeDelivered: the receiver answered 2xx.
	OutcomeDelivered = "delivered"
	// OutcomeRetryable: a network error, a timeout, 408, 425, 429, 5xx,
	// or 409 to a retry.
	OutcomeRetryable = "retryable"
	// OutcomePermanent: any other status, a destination the egress guard
	// refused, or a request that cannot be built.
	OutcomePermanent = "permanent"
)

// Options configures a Sender. Only Store is required; the zero value of
// every other field is the documented default.
type Options struct {
	// Store is the durable buffer the sender claims batches from.
	Store Store

	// BatchSize sends a target's batch as soon as it holds BatchSize
	// hooks; a batch never holds more. Zero: no size trigger.
	BatchSize int
	// BatchTime: the first hook for an idle target opens a window; when
	// it ends, what is there is sent. Zero: no time trigger. With neither
	// BatchSize nor BatchTime each hook is forwarded alone, with its own
	// method, headers and body.
	BatchTime time.Duration
	// BatchMaxWait bounds, in size-only mode, how long a remainder below
	// BatchSize waits (from the arrival of its oldest hook). Zero: 1m.
	BatchMaxWait time.Duration
	// MaxBatchHooks caps a batch in time-only mode. Zero: 1000.
	MaxBatchHooks int
	// BatchMaxBytes caps the body bytes of a batch: a batch that would
	// pass it is cut before the hook that would, and the rest goes in
	// the next one. A single hook larger than that still goes, alone.
	// Zero: no limit.
	BatchMaxBytes int64

	// Retries is how many times a failed batch is tried again after its
	// first attempt; RetryForever (-1) retries until it is delivered.
	// Zero: no retry.
	Retries int
	// Backoff is how the wait between attempts grows: BackoffExponential
	// (the default, also for "") or BackoffFixed.
	Backoff string
	// RetryInterval is the wait after a failed attempt: every time with
	// BackoffFixed, after the first failure with BackoffExponential (then
	// doubled for each further one). Zero: 5s.
	RetryInterval time.Duration
	// RetryMaxInterval caps the wait between attempts, the exponential
	// ones and those a receiver's Retry-After asks for. Zero: 10m, or
	// RetryInterval when that is longer; less than RetryInterval is an
	// error.
	RetryMaxInterval time.Duration
	// RetryMaxAge gives up on a batch that fails with a retryable error
	// when it was formed at least this long ago, whatever its count
	// (reason ReasonMaxAge). Zero: no age limit.
	RetryMaxAge time.Duration
	// OnGiveUp is what happens to a batch that is given up on:
	// GiveUpDeadLetter (the default, also for "") or GiveUpDiscard.
	OnGiveUp string

	// SendTimeout bounds one attempt, response included. Zero: 15s.
	SendTimeout time.Duration
	// Concurrency is how many targets are sent to at once, and how many
	// gone webhook POSTs are in progress at once. Zero: 16.
	Concurrency int
	// Client sends the requests. Nil: a client of the sender's own, on
	// Transport, with the redirect policy FollowRedirects says. A client
	// given here is used as it is: Transport, Guard and FollowRedirects
	// do not apply to it, so it must check destinations and refuse
	// redirects itself.
	Client *http.Client
	// Transport is the transport of the sender's own client. Nil: one of
	// the sender's own that never uses the process's proxy settings (they
	// point at hookproxy itself), pools connections, verifies TLS with
	// TLSConfig and dials through Guard. A transport given here must check
	// destinations itself (DialContext from Guard.Dialer).
	Transport http.RoundTripper
	// TLSConfig verifies receivers in the sender's own transport (its
	// RootCAs, for one). Nil: Go's defaults, the system roots.
	TLSConfig *tls.Config
	// Guard refuses destinations on the operator's own networks (SSRF
	// protection) at dial time in the sender's own transport, for every
	// redirect hop too; a refused batch is given up at once with reason
	// ReasonBlocked. Nil: the zero egress.Guard, which lets through
	// public addresses only.
	Guard *egress.Guard
	// FollowRedirects makes the sender's own client follow up to
	// MaxRedirects redirects to http and https URLs (each hop goes
	// through Guard), as long as the method stays the same (a 301, 302
	// or 303 that would turn a POST into a GET is not followed). False:
	// a 3xx is a permanent failure.
	FollowRedirects bool
	// UserAgent is sent with every batch, and with a single hook that has
	// none of its own. Empty: "hookproxy".
	UserAgent string
	// SigningSecrets, when set, sign every delivery the Standard Webhooks
	// way: webhook-id (the batch id), webhook-timestamp (the attempt's
	// unix seconds) and webhook-signature, one "v1,<base64>" per secret
	// separated by spaces (several while a secret is rotated). Each is a
	// "whsec_" secret (see ParseSigningSecret). Empty: no signature.
	SigningSecrets []string
	// GoneWebhook, when set, is POSTed {"target": URL, "hook_ids": [...]}
	// (JSON) each time a receiver answers 410 Gone, so the app can delete
	// the subscription. It is sent by the same client (through Guard),
	// tried a few times, and given up on with a log line. Empty: none.
	GoneWebhook string

	// Logger receives one line per delivery attempt and one per give-up.
	// Nil: nothing is logged.
	Logger *slog.Logger
	// Clock is the time source of the scheduler. Nil: the real clock.
	Clock Clock

	// OnAttempt, when set, is called after every delivery attempt with
	// its outcome (OutcomeDelivered, OutcomeRetryable, OutcomePermanent),
	// the HTTP status (0 for a network error), how long it took and how
	// many hooks the batch held. Attempts cut short by shutdown are not
	// reported. It is called from the sending goroutines and must be quick.
	OnAttempt func(outcome string, status int, d time.Duration, batchSize int)
	// OnDelivered, when set, is called for every acknowledged batch.
	OnDelivered func(batchSize int)
	// OnGivenUp, when set, is called for every batch given up on (dead-
	// lettered or discarded, as OnGiveUp says) with the reason. (The name
	// OnGiveUp is taken by the setting.)
	OnGivenUp func(reason string, batchSize int)
}

// Defaults of Options.
const (
	DefaultBatchMaxWait     = time.Minute
	DefaultMaxBatchHooks    = 1000
	DefaultRetryInterval    = 5 * time.Second
	DefaultRetryMaxInterval = 10 * time.Minute
	DefaultSendTimeout      = 15 * time.Second
	DefaultConcurrency      = 16
	DefaultUserAgent        = "hookproxy"
)

// MaxRedirects is how many redirects one attempt follows at most when
// Options.FollowRedirects is set.
const MaxRedirects = 5

// ErrBusy is returned by Run when the sender is already running or
// draining.
var ErrBusy = errors.New("sender already running or draining")

// ErrUndelivered is returned by Drain when hooks are left on disk because
// their receivers failed during the drain.
var ErrUndelivered = errors.New("hooks left undelivered")

// Sender schedules and sends batches. Create it with New, feed it with
// Notify, and run it with Run; on shutdown call Drain after Run returned.
type Sender struct {
	store     Store
	pol       policy
	discard   bool
	timeout   time.Duration
	workers   int
	client    *http.Client
	ownClient bool
	userAgent string
	signer    *signer
	log       *slog.Logger
	clock     Clock
	// rand draws the jitter of retry waits, in [0, 1).
	rand func() float64

	goneWebhook string
	goneWaits   []time.Duration // between gone webhook attempts
	// goneSlots bounds the gone webhook POSTs in progress, as workers
	// bounds deliveries: a burst of 410s must not fire as many requests
	// at the app at once.
	goneSlots chan struct{}

	onAttempt   func(string, int, time.Duration, int)
	onDelivered func(int)
	onGivenUp   func(string, int)
	// onGoneNotified, when set (by tests), is called when a gone webhook
	// was sent (nil) or given up on.
	onGoneNotified func(error)
	// onGoneQueued, when set (by tests), is called when a gone webhook
	// POST waits for one of goneSlots.
	onGoneQueued func()

	// gate is held by Run or Drain, so they never send at the same time.
	gate chan struct{}
	// wake tells the running loop that the schedule changed.
	wake chan struct{}

	mu      sync.Mutex
	targets map[buffer.TargetID]*target
	queue   dueHeap
	// slow holds the slow targets (see target.slow) apart from queue; at
	// most slowCap of them are sent to at once (in a drain, while other
	// targets are left), so that receivers that hang never take every
	// worker.
	slow     dueHeap
	slowCap  int
	busy     int // batches being sent, bounded by workers
	slowBusy int // of which to slow targets
	// overtime counts attempts at ordinary targets that have run half
	// the send timeout: they no longer count in busy, so a receiver that
	// starts to hang does not hold an ordinary worker until it times
	// out. With slowBusy, at most slowCap (see startLocked).
	overtime int
	ripe     []*attempt // attempts that have run half the send timeout and wait for such a slot
	armed    time.Time  // deadline of the loop's timer (zero: none)
	held     []*target  // set aside by the running Drain
	epoch    uint64     // counts wake-ups asked for (tests settle on it)
	// stuck holds the targets whose last turn ended in a store error,
	// with when each was first due, for OldestDue.
	stuck map[*target]time.Time
	// hosts are the receiver hosts found slow: an attempt at an ordinary
	// target on one of them counts against slowCap from its start, or
	// the target waits with the slow ones (see admit).
	hosts slowHosts

	// onIdle, when set (by tests), is called each time the Run loop is
	// about to wait.
	onIdle func(loopState)
}

// loopState is what the Run loop reports to tests before it waits.
type loopState struct {
	now   time.Time // the time of the iteration
	epoch uint64    // wake-ups seen
	busy  int       // batches being sent, overtime included
	queue int       // targets scheduled
	next  time.Time // the timer's deadline (zero: none)
}

// New validates opts and returns a Sender; it starts nothing.
func New(opts Options) (*Sender, error) {
	var errs []error
	bad := func(name string, v any) {
		errs = append(errs, fmt.Errorf("%s is negative: %v", name, v))
	}
	if opts.Store == nil {
		errs = append(errs, errors.New("Store is nil"))
	}
	if opts.BatchSize < 0 {
		bad("BatchSize", opts.BatchSize)
	}
	if opts.BatchTime < 0 {
		bad("BatchTime", opts.BatchTime)
	}
	if opts.BatchMaxWait < 0 {
		bad("BatchMaxWait", opts.BatchMaxWait)
	}
	if opts.MaxBatchHooks < 0 {
		bad("MaxBatchHooks", opts.MaxBatchHooks)
	}
	if opts.BatchMaxBytes < 0 {
		bad("BatchMaxBytes", opts.BatchMaxBytes)
	}
	if opts.Retries < RetryForever {
		errs = append(errs, fmt.Errorf("%s is %d, want %d (retry forever) or more", "Retries", opts.Retries, RetryForever))
	}
	switch opts.Backoff {
	case "", BackoffExponential, BackoffFixed:
	default:
		errs = append(errs, fmt.Errorf("%s is %q, want %q or %q", "Backoff", opts.Backoff, BackoffExponential, BackoffFixed))
	}
	if opts.RetryInterval < 0 {
		bad("RetryInterval", opts.RetryInterval)
	}
	if opts.RetryMaxInterval < 0 {
		bad("RetryMaxInterval", opts.RetryMaxInterval)
	}
	if opts.RetryMaxInterval > 0 && opts.RetryMaxInterval < orDefault(opts.RetryInterval, DefaultRetryInterval) {
		errs = append(errs, fmt.Errorf("RetryMaxInterval %v is less than RetryInterval %v",
			opts.RetryMaxInterval, orDefault(opts.RetryInterval, DefaultRetryInterval)))
	}
	if opts.RetryMaxAge < 0 {
		bad("RetryMaxAge", opts.RetryMaxAge)
	}
	var keys [][]byte
	for i, secret := range opts.SigningSecrets {
		key, err := ParseSigningSecret(secret)
		if err != nil {
			errs = append(errs, fmt.Errorf("SigningSecrets[%d]: %w", i, err))
		}
		keys = append(keys, key)
	}
	if opts.GoneWebhook != "" {
		if u, err := url.Parse(opts.GoneWebhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, errors.New("GoneWebhook is not an http or https URL"))
		}
	}
	if opts.SendTimeout < 0 {
		bad("SendTimeout", opts.SendTimeout)
	}
	if opts.Concurrency < 0 {
		bad("Concurrency", opts.Concurrency)
	}
	switch opts.OnGiveUp {
	case "", GiveUpDeadLetter, GiveUpDiscard:
	default:
		errs = append(errs, fmt.Errorf("OnGiveUp is %q, want %q or %q", opts.OnGiveUp, GiveUpDeadLetter, GiveUpDiscard))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("new sender: %w", err)
	}

	p := policy{
		size:     opts.BatchSize,
		window:   opts.BatchTime,
		maxWait:  orDefault(opts.BatchMaxWait, DefaultBatchMaxWait),
		maxBytes: opts.BatchMaxBytes,
		retries:  opts.Retries,
		backoff:  orDefault(opts.Backoff, BackoffExponential),
		interval: orDefault(opts.RetryInterval, DefaultRetryInterval),
		maxAge:   opts.RetryMaxAge,
	}
	p.maxInterval = orDefault(opts.RetryMaxInterval, max(DefaultRetryMaxInterval, p.interval))
	switch {
	case p.size > 0:
		p.claim = p.size
	case p.window > 0:
		p.claim = orDefault(opts.MaxBatchHooks, DefaultMaxBatchHooks)
	default:
		p.claim = 1
	}
	s := &Sender{
		store:       opts.Store,
		pol:         p,
		discard:     opts.OnGiveUp == GiveUpDiscard,
		timeout:     orDefault(opts.SendTimeout, DefaultSendTimeout),
		workers:     orDefault(opts.Concurrency, DefaultConcurrency),
		client:      opts.Client,
		userAgent:   orDefault(opts.UserAgent, DefaultUserAgent),
		log:         opts.Logger,
		clock:       opts.Clock,
		rand:        rand.Float64,
		goneWebhook: opts.GoneWebhook,
		goneWaits:   goneWebhookWaits,
		onAttempt:   opts.OnAttempt,
		onDelivered: opts.OnDelivered,
		onGivenUp:   opts.OnGivenUp,
		gate:        make(chan struct{}, 1),
		wake:        make(chan struct{}, 1),
		targets:     make(map[buffer.TargetID]*target),
		stuck:       make(map[*target]time.Time),
		hosts:       newSlowHosts(maxSlowHosts),
	}
	s.slowCap = max(1, s.workers/2)
	s.goneSlots = make(chan struct{}, s.workers)
	if len(keys) > 0 {
		s.signer = &signer{keys: keys}
	}
	if s.client == nil {
		tr := opts.Transport
		if tr == nil {
			tr = NewTransport(s.workers, opts.TLSConfig, opts.Guard)
			s.ownClient = true
		}
		s.client = &http.Client{Transport: locationCheck{tr}, CheckRedirect: redirectPolicy(opts.FollowRedirects)}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.clock == nil {
		s.clock = realClock{}
	}
	return s, nil
}

// orDefault returns v, or def when v is the zero value.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// NewTransport builds a transport like the sender's own: every
// connection, redirect hops included, is checked by guard at dial time,
// receivers are verified with tlsConfig (nil: Go's defaults), and up to
// workers connections per host are kept alive. Whatever else sends to
// subscriber URLs should use one.
func NewTransport(workers int, tlsConfig *tls.Config, guard *egress.Guard) *http.Transport {
	if tlsConfig != nil {
		tlsConfig = tlsConfig.Clone()
	}
	dial := ackingDial(guard.DialContext(&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}))
	return &http.Transport{
		TLSClientConfig: tlsConfig,
		// Never the process's proxy settings: in the sidecar they point at
		// hookproxy itself, and deliveries would loop back into it (and
		// the guard would check the proxy's address, not the target's).
		Proxy:       nil,
		DialContext: dial,
		// A custom DialContext or TLSClientConfig turns HTTP/2 off unless
		// asked for.
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4 * workers,
		MaxIdleConnsPerHost:   workers, // many targets often share one receiver host
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		// net/http's default is 10 MiB per response: a receiver sending
		// that much header to each of the workers would hold hundreds of
		// MB. A larger header fails the attempt (a retryable error).
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
	}
}

// ackingDial wraps dial so that each TCP connection re-arms TCP_QUICKACK
// after every write. Receivers built on python's http.server or wsgiref
// (Django's runserver among them) write an answer's header and body
// apart with Nagle's algorithm on: with the ACK of the header delayed,
// every answer on a kept-alive connection took 40 ms more, and such a
// receiver took at most about 23 hooks a second from a target.
func ackingDial(dial func(ctx context.Context, network, address string) (net.Conn, error)) func(ctx context.Context, network, address string) (net.Conn, error) {
	if !quickack.Supported {
		return dial
	}
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := dial(ctx, network, address)
		if err != nil {
			return c, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			if raw, err := tc.SyscallConn(); err == nil {
				return &ackingConn{Conn: tc, raw: raw}, nil
			}
		}
		return c, nil
	}
}

// ackingConn re-arms TCP_QUICKACK after each write: Linux leaves quick
// acknowledgement whenever the connection sends right after it
// received, as a request sent after the previous answer does. It holds
// a net.Conn, not the *net.TCPConn: the latter's ReadFrom would let a
// copy write past Write.
type ackingConn struct {
	net.Conn
	raw syscall.RawConn
}

func (c *ackingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	ackArms.Add(1)
	_ = c.raw.Control(quickack.Set)
	return n, err
}

// ackArms counts the arms of every ackingConn, for tests.
var ackArms atomic.Int64

// maxResponseHeaderBytes bounds the header of a receiver's answer
// (informational responses included) in the sender's own transport.
const maxResponseHeaderBytes = 64 << 10

// redirectPolicy is the sender's http.Client.CheckRedirect. Not
// following, a 3xx is the attempt's answer. Following, a hop is refused
// (errRedirect, a permanent failure) when it is not to an http or https
// URL, when it would change the method (net/http turns a POST into a
// body-less GET on 301, 302 and 303: "delivering" that would lose the
// hooks), or after MaxRedirects hops. The egress guard checks every hop
// at dial time.
func redirectPolicy(follow bool) func(*http.Request, []*http.Request) error {
	if !follow {
		return func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return func(req *http.Request, via []*http.Request) error {
		host := req.URL.Host
		if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
			return fmt.Errorf("redirect to a %q URL: %w", req.URL.Scheme, errRedirect)
		}
		// via holds the first request and the hops followed so far.
		if hops := len(via) - 1; hops >= MaxRedirects {
			return fmt.Errorf("redirect to %s after %d redirects: %w", host, hops, errRedirect)
		}
		// net/http gives the hop the URL it leaves as Referer: the target
		// URL, whose path or query may hold the subscriber's secret.
		if via[0].Header.Get("Referer") == "" {
			req.Header.Del("Referer")
		}
		if m := via[0].Method; req.Method != m {
			status := 0
			if req.Response != nil {
				status = req.Response.StatusCode
			}
			return fmt.Errorf("redirect to %s: a %d would turn the %s into a %s: %w",
				host, status, m, req.Method, errRedirect)
		}
		return nil
	}
}

// locationCheck wraps the transport of the sender's own client. Before
// it asks CheckRedirect, net/http reads the Location of a 301, 302, 303,
// 307 or 308 and fails the request when it does not parse, with an
// error that names it whole: a network error to classify, retried like
// one, where every other redirect not followed is a permanent failure,
// and a Location (query string included) in the logs. locationCheck
// turns such an answer into a *badLocationError first.
type locationCheck struct{ rt http.RoundTripper }

// RoundTrip implements http.RoundTripper.
func (l locationCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		// What net/http does with a Location, to the letter.
		if loc := resp.Header.Get("Location"); loc != "" {
			if _, err := req.URL.Parse(loc); err != nil {
				closeBody(resp)
				return nil, &badLocationError{status: resp.StatusCode}
			}
		}
	}
	return resp, nil
}

// CloseIdleConnections closes the idle connections of the wrapped
// transport, for http.Client.CloseIdleConnections.
func (l locationCheck) CloseIdleConnections() {
	if c, ok := l.rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// badLocationError is a redirect whose Location is not a URL; it matches
// errRedirect.
type badLocationError struct{ status int }

func (e *badLocationError) Error() string {
	return fmt.Sprintf("redirect to a Location that is not a URL (HTTP %d %s): %v",
		e.status, http.StatusText(e.status), errRedirect)
}

func (e *badLocationError) Unwrap() error { return errRedirect }

// Notify tells the sender about a target's new status; the store calls it
// after every commit of captured hooks. It never blocks on I/O: it
// updates the schedule under a short lock and wakes the loop when the
// earliest due time moved. Statuses may arrive out of order: the one with
// the highest Version wins. It may be called before Run.
func (s *Sender) Notify(st buffer.TargetStatus) {
	s.mu.Lock()
	woke := s.applyLocked(st)
	if woke {
		s.epoch++
	}
	s.mu.Unlock()
	if woke {
		s.signal()
	}
}

// signal wakes the loop; a wake-up already pending covers this one.
func (s *Sender) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// OldestDue reports how long the most overdue batch has been waiting past
// its due time without being sent, as of now; zero when nothing is
// overdue. It grows when every worker is stuck, the loop is not running,
// or the store keeps failing a target's turns, which makes it a stall
// signal for a readiness check.
func (s *Sender) OldestDue(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var d time.Duration
	for _, q := range []dueHeap{s.queue, s.slow} {
		if len(q) > 0 {
			d = max(d, now.Sub(q[0].due))
		}
	}
	for _, since := range s.stuck {
		d = max(d, now.Sub(since))
	}
	return max(d, 0)
}

// Run loads every target's status from the store, then sends each batch
// when it is due, until ctx is done. An in-flight batch found at start is
// sent again with the same id, at its recorded next attempt, and its
// attempts keep counting. When ctx is done Run stops scheduling and
// returns nil once the attempts in progress (and the gone webhook POSTs
// that follow them, which get no further tries) have ended: each ends
// when its receiver answers (and is recorded), at the send timeout, or
// when attempts is done, which cuts it short (not counted: the batch
// stays in flight, for Drain or the next start). Letting an attempt
// finish spares a receiver that was answering the batch from getting it
// again from Drain. It returns ErrBusy when Run or Drain is already
// active.
func (s *Sender) Run(ctx, attempts context.Context) error {
	select {
	case s.gate <- struct{}{}:
	default:
		return fmt.Errorf("run sender: %w", ErrBusy)
	}
	defer func() { <-s.gate }()
	if err := s.load(); err != nil {
		return fmt.Errorf("run sender: %w", err)
	}
	if s.ownClient {
		defer s.client.CloseIdleConnections()
	}

	sendCtx, cancel := context.WithCancel(attempts)
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		cancel()
		s.mu.Lock()
		s.armed = time.Time{}
		s.mu.Unlock()
	}()

	timer := s.clock.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		// The select below may take a wake-up over ctx's end when both
		// are ready: no attempt starts once ctx is done.
		if ctx.Err() != nil {
			return nil
		}
		s.mu.Lock()
		now := s.clock.Now()
		epoch := s.epoch
		for s.busy < s.workers {
			t := s.popDueLocked(now, false)
			if t == nil {
				break
			}
			s.startLocked(sendCtx, ctx.Done(), &wg, t, false)
		}
		var next time.Time
		if s.busy < s.workers {
			next = s.nextDueLocked()
		}
		s.armed = next
		st := loopState{now: now, epoch: epoch, busy: s.busy + s.overtime, queue: len(s.queue) + len(s.slow), next: next}
		s.mu.Unlock()

		if next.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(next.Sub(now))
			if !s.clock.Now().Before(next) {
				continue // time moved past the deadline while the timer was armed
			}
		}
		if s.onIdle != nil {
			s.onIdle(st)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-timer.C():
		}
	}
}

// Drain sends every pending batch now, ignoring batching windows and
// retry waits: one batch in flight per target, at most Concurrency at
// once, batch after batch until nothing is pending or ctx is done. A
// target whose receiver fails during the drain gets no second attempt in
// it; its hooks stay on disk for the next start. Drain first waits (within
// ctx) for Run to return, so call it after cancelling Run's context. It
// returns nil when nothing is left pending, an error wrapping
// ErrUndelivered when failing receivers left hooks behind, and ctx's
// error when the deadline came first.
func (s *Sender) Drain(ctx context.Context) error {
	select {
	case s.gate <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("drain sender: wait for run: %w", ctx.Err())
	}
	defer func() { <-s.gate }()
	if s.ownClient {
		defer s.client.CloseIdleConnections()
	}
	if err := s.load(); err != nil {
		return fmt.Errorf("drain sender: %w", err)
	}

	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		// Targets set aside go back into the schedule for a later Run.
		s.mu.Lock()
		for _, t := range s.held {
			t.held = false
			s.rescheduleLocked(t)
		}
		s.held = nil
		s.mu.Unlock()
	}()
	for {
		s.mu.Lock()
		for s.busy < s.workers {
			t := s.popDueLocked(farFuture, true) // no waits in a drain
			if t == nil {
				break
			}
			s.startLocked(ctx, closed, &wg, t, true)
		}
		done := s.busy == 0 && s.overtime == 0 && len(s.queue) == 0 && len(s.slow) == 0
		held := len(s.held)
		s.mu.Unlock()
		if done && held > 0 {
			what := "targets"
			if held == 1 {
				what = "target"
			}
			return fmt.Errorf("drain sender: %d %s: %w", held, what, ErrUndelivered)
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain sender: %w", ctx.Err())
		case <-s.wake:
		}
	}
}

// load merges the store's view of every target into the schedule.
func (s *Sender) load() error {
	sts, err := s.store.Targets()
	if err != nil {
		return fmt.Errorf("load targets: %w", err)
	}
	s.mu.Lock()
	for _, st := range sts {
		s.applyLocked(st)
	}
	s.mu.Unlock()
	return nil
}

// startLocked marks t busy and sends its batch in a goroutine that wg
// tracks: ctx bounds the attempt and the gone webhook that may follow it,
// whose waits between tries end when waits closes. An attempt at an
// ordinary target that runs half the send timeout becomes overtime,
// while fewer than slowCap slow and overtime attempts run: its worker
// goes back to the other targets. One on a receiver host found slow does
// so from its start, or waits with the slow targets (see admit). Called
// with s.mu held.
func (s *Sender) startLocked(ctx context.Context, waits <-chan struct{}, wg *sync.WaitGroup, t *target, drain bool) {
	t.busy = true
	s.busy++
	slow := t.slow // settleLocked may change it
	if slow {
		s.slowBusy++
	}
	a := new(attempt)
	finished := make(chan struct{})
	var (
		timer    Timer
		ordinary *attempt // a, for admit; nil at a slow target
	)
	if !slow {
		ordinary = a
		timer = s.clock.NewTimer(s.timeout / 2)
		wg.Go(func() {
			select {
			case <-finished:
				return
			case <-timer.C():
			}
			s.mu.Lock()
			if !a.ended && !a.over {
				a.ripe = true
				if a.host != "" {
					// Still sending: its host hangs, or drops packets.
					s.hosts.mark(a.host)
				}
				s.ripe = append(s.ripe, a)
				s.overtimeLocked()
			}
			s.mu.Unlock()
			s.signal()
		})
	}
	version, gone, owed := t.version, t.gone, t.owed()
	wg.Go(func() {
		res := s.deliver(ctx, t.id, drain, gone, owed, ordinary)
		if timer != nil {
			timer.Stop()
		}
		close(finished)
		if res.gone != nil && s.goneWebhook != "" {
			// In the background: the target's turn is over, and the
			// webhook's retries must not hold a worker.
			wg.Go(func() { s.notifyGone(ctx, waits, *res.gone) })
		}
		s.mu.Lock()
		if res.attempted {
			if res.slow {
				s.hosts.mark(res.host)
			} else {
				s.hosts.unmark(res.host)
			}
		}
		a.ended = true
		if a.over {
			s.overtime--
		} else {
			s.busy--
		}
		if slow {
			s.slowBusy--
		}
		if a.ripe && !a.over {
			s.ripe = slices.DeleteFunc(s.ripe, func(r *attempt) bool { return r == a })
		}
		s.overtimeLocked() // the slot given back may go to a waiting one
		t.busy = false
		s.settleLocked(t, res, version, drain)
		s.epoch++
		s.mu.Unlock()
		s.signal()
	})
}

// attempt is an attempt in progress at an ordinary target, for overtime.
// Its fields are guarded by Sender.mu.
type attempt struct {
	ended bool   // it has returned
	ripe  bool   // it has run half the send timeout
	over  bool   // it no longer holds a worker (counted in overtime)
	host  string // its receiver host, once the batch is claimed
}

// admit is called by an attempt at an ordinary target once it knows its
// receiver host, before it sends. When the host was found slow, the
// attempt does not hold an ordinary worker: it is moved to overtime at
// once while fewer than slowCap slow and overtime attempts run, and
// otherwise admit reports false: the turn ends unsent and the target
// waits with the slow ones. Without this, each of many targets on a host
// that starts to hang held a worker for half the send timeout before it
// was found slow, and together they held the other targets back for
// that long times their number over the workers.
func (s *Sender) admit(a *attempt, host string) bool {
	s.mu.Lock()
	a.host = host
	if a.over || !s.hosts.has(host) {
		s.mu.Unlock()
		return true
	}
	// Ripe attempts wait only while the slots are taken: room means a
	// is not among them.
	if s.slowBusy+s.overtime >= s.slowCap {
		s.mu.Unlock()
		return false
	}
	a.over = true
	s.busy--
	s.overtime++
	s.epoch++
	s.mu.Unlock()
	s.signal()
	return true
}

// overtimeLocked moves ripe attempts out of busy, oldest first, while
// fewer than slowCap slow and overtime attempts run. Called with s.mu
// held.
func (s *Sender) overtimeLocked() {
	for len(s.ripe) > 0 && s.slowBusy+s.overtime < s.slowCap {
		a := s.ripe[0]
		s.ripe = s.ripe[1:]
		a.over = true
		s.busy--
		s.overtime++
		s.epoch++
	}
}
