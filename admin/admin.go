// Package admin is hookproxy's operator side: an HTTP listener, separate
// from the proxy port, with health and readiness checks, Prometheus
// metrics, and a JSON API to inspect targets and to list, replay and
// purge dead letters; and a Client of that API for the command line.
//
// Routes (every one but /healthz requires the bearer token when one is
// set):
//
//	GET    /healthz                        the process is alive
//	GET    /readyz                         200, or 503 with the reasons
//	GET    /metrics                        Prometheus exposition
//	GET    /api/status                     totals and readiness
//	GET    /api/targets                    paged; ?sort=pending|age|id&order=asc|desc&limit=&offset=
//	GET    /api/targets/{id}
//	POST   /api/targets/{id}/clear-gone
//	GET    /api/dead-letters               paged; ?target=&target_id=&reason=&limit=&offset=
//	GET    /api/dead-letters/{id}          with the original bodies
//	POST   /api/dead-letters/replay        selector: all, target, target_id or ids (+ reason)
//	DELETE /api/dead-letters               the same selectors, as query parameters
//	GET    /ca.pem                         the MITM CA certificate, when there is one
//
// Errors are JSON objects with a message: {"message": "...", "status": 404}.
//
// Every answer, errors included, carries the MarkHeader, so that the
// Client can tell the admin API from any other server at its address.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"hookproxy/buffer"
)

// fromWebPage says why r looks sent by a web page in a browser, which
// must not drive the admin API, or returns "". A change (any method but
// GET and HEAD) from another site is refused: a page can post a form
// cross-site without asking. Without a token, a request that names a
// host by a dotted DNS name is refused too: DNS rebinding, by which a
// page on the attacker's domain reads from 127.0.0.1 (or a port published
// there) under that domain. IP addresses, localhost and single-label
// names (a compose service, say), which no outside domain can make a
// browser resolve, are taken.
func fromWebPage(r *http.Request, tokenSet bool) string {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
			return "a change requested by a web page of another site is refused"
		}
		if o := r.Header.Get("Origin"); o != "" {
			if u, err := url.Parse(o); err != nil || !strings.EqualFold(u.Host, r.Host) {
				return "a change requested by a web page of another origin is refused"
			}
		}
	}
	if tokenSet {
		return ""
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if _, err := netip.ParseAddr(host); err == nil || !strings.Contains(host, ".") ||
		strings.HasSuffix(host, ".localhost") {
		return ""
	}
	return fmt.Sprintf("without a token the admin API answers to IP addresses and single-label host names only, not to Host %q "+
		"(set HOOKPROXY_ADMIN_TOKEN to reach it under a DNS name)", r.Host)
}

// noRoute starts the message of the 404 for a path that is no route, so
// that the Client can tell it from a 404 for a dead letter or a target
// that is not there.
const noRoute = "no such route: "

// MarkHeader marks every answer of the admin API; its value is the
// server's version (Options.Version, or "unknown"). The Client refuses
// an answer without it: the address is not hookproxy's admin API (another
// server, or hookproxy's proxy port), whatever its status and body.
const MarkHeader = "X-Hookproxy-Admin"

// Store is what the admin API needs of the durable buffer; *buffer.Store
// implements it.
type Store interface {
	// Targets returns the status of every target with pending hooks, a
	// batch in flight or the gone mark.
	Targets() ([]buffer.TargetStatus, error)
	// Target returns one target's status, or an error wrapping
	// buffer.ErrNotFound.
	Target(id buffer.TargetID) (buffer.TargetStatus, error)
	// Stats summarises the pending hooks.
	Stats() buffer.Stats
	// DeadLetterHeads returns the selected dead letters, oldest first,
	// with their fields alone: no hooks.
	DeadLetterHeads(f buffer.DeadLetterFilter) ([]buffer.DeadLetter, error)
	// DeadLetterPage returns the selected dead letters from the
	// offset-th on, at most limit of them, oldest first, their hooks
	// without their bodies, and how many are selected in all.
	DeadLetterPage(f buffer.DeadLetterFilter, offset, limit int) ([]buffer.DeadLetter, int, error)
	// DeadLetterTotals returns how many dead letters there are and the
	// hooks and body bytes they hold.
	DeadLetterTotals() (buffer.DeadTotals, error)
	// GetDeadLetter returns one dead letter with its hooks, or an error
	// wrapping buffer.ErrNotFound.
	GetDeadLetter(id string) (buffer.DeadLetter, error)
	// ReplayDeadLetters puts the selected dead letters' hooks back in
	// their targets' queues, in order, and returns how many hooks went;
	// it skips (and leaves out of replayed) those with reason
	// buffer.ReasonUnreadable, which have no bodies.
	ReplayDeadLetters(f buffer.DeadLetterFilter) (replayed []string, hooks int, err error)
	// PurgeDeadLetters deletes the selected dead letters and returns the
	// ids of those it deleted.
	PurgeDeadLetters(f buffer.DeadLetterFilter) ([]string, error)
	// SetGone sets or clears a target's gone mark.
	SetGone(id buffer.TargetID, gone bool) (buffer.TargetStatus, error)
}

// Progress is what readiness needs of the sender; *sender.Sender
// implements it.
type Progress interface {
	// OldestDue reports how long the most overdue batch has been due
	// without an attempt, as of now; zero when none is.
	OldestDue(now time.Time) time.Duration
}

// Options configures a Server. Only Store is required; the zero value of
// every other field is a documented default.
type Options struct {
	// Store is the durable buffer. Required.
	Store Store
	// Progress is the sender, for the stall check. Nil: no stall check.
	Progress Progress
	// Metrics, when set, is served on /metrics, and New adds the gauges
	// of the store's state to it. Nil: /metrics answers 404.
	Metrics *Metrics
	// Token, when not empty, is the bearer token every route but /healthz
	// requires ("Authorization: Bearer <token>").
	Token string
	// StallAfter is how long a batch may be due without an attempt before
	// /readyz fails. Zero: no stall check.
	StallAfter time.Duration
	// MaxPendingBytes is the store's pending-bytes quota; /readyz fails
	// when the pending bytes reach QuotaHighWater of it. Zero: no quota.
	MaxPendingBytes int64
	// QuotaHighWater is the share of MaxPendingBytes that counts as nearly
	// full. Zero: DefaultQuotaHighWater (0.9).
	QuotaHighWater float64
	// StoreCheck reports whether the store accepts writes. Nil: the store
	// counts as writable while it answers a lookup (a closed store does
	// not).
	StoreCheck func() error
	// DiskUsage returns the bytes the store takes on disk (LSM tree and
	// value log), for /metrics and /api/status. Nil: not reported.
	DiskUsage func() (lsm, vlog int64)
	// Space returns the free space of the store's file system and the
	// reserve captures leave on it (ok false: not checked), for
	// /metrics. Nil: not reported.
	Space func() (free, reserve int64, ok bool)
	// CACert is the PEM of the CA that signs MITM certificates, served on
	// /ca.pem. Nil: /ca.pem answers 404.
	CACert []byte
	// OnTargetChange, when set, is called with a target's new status after
	// the API changed it (clear-gone), so the sender can reschedule it.
	OnTargetChange func(buffer.TargetStatus)
	// Version is reported by /api/status and in the MarkHeader of every
	// answer. Empty: the header says "unknown".
	Version string
	// Logger receives one line per change made through the API and every
	// error. Nil discards.
	Logger *slog.Logger
	// Now is the clock for ages and readiness. Nil: time.Now.
	Now func() time.Time
}

// Server is the admin HTTP server. It is an http.Handler; Serve runs it on
// a listener with timeouts. Its methods are safe for concurrent use.
type Server struct {
	store      Store
	progress   Progress
	metrics    *Metrics
	tokenSum   [sha256.Size]byte
	auth       bool
	policy     ReadyPolicy
	storeCheck func() error
	diskUsage  func() (lsm, vlog int64)
	space      func() (free, reserve int64, ok bool)
	caCert     []byte
	onChange   func(buffer.TargetStatus)
	version    string
	mark       string // the MarkHeader's value
	log        *slog.Logger
	now        func() time.Time

	draining atomic.Bool
	mux      *http.ServeMux
	srv      *http.Server
}

// New validates opts and builds a Server; it starts nothing.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("new admin server: Store is nil")
	}
	if opts.StallAfter < 0 || opts.MaxPendingBytes < 0 || opts.QuotaHighWater < 0 || opts.QuotaHighWater > 1 {
		return nil, fmt.Errorf("new admin server: StallAfter %v, MaxPendingBytes %d, QuotaHighWater %v: out of range",
			opts.StallAfter, opts.MaxPendingBytes, opts.QuotaHighWater)
	}
	if opts.Token != "" && strings.TrimSpace(opts.Token) == "" {
		return nil, errors.New("new admin server: Token is only white space")
	}
	s := &Server{
		store:    opts.Store,
		progress: opts.Progress,
		metrics:  opts.Metrics,
		auth:     opts.Token != "",
		// Trimmed as the presented token is: a token from a file (a
		// Kubernetes secret, say) often ends with a newline.
		tokenSum:   sha256.Sum256([]byte(strings.TrimSpace(opts.Token))),
		storeCheck: opts.StoreCheck,
		diskUsage:  opts.DiskUsage,
		space:      opts.Space,
		caCert:     opts.CACert,
		onChange:   opts.OnTargetChange,
		version:    opts.Version,
		mark:       opts.Version,
		log:        opts.Logger,
		now:        opts.Now,
		policy: ReadyPolicy{
			StallAfter:      opts.StallAfter,
			MaxPendingBytes: opts.MaxPendingBytes,
			QuotaHighWater:  opts.QuotaHighWater,
		},
	}
	if s.mark == "" {
		s.mark = "unknown" // an empty header would read as a missing one
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.storeCheck == nil {
		s.storeCheck = s.lookupCheck
	}
	if s.metrics != nil {
		if err := s.metrics.reg.Register(newStateCollector(s)); err != nil {
			return nil, fmt.Errorf("new admin server: register state metrics: %w", err)
		}
	}
	s.routes()
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      time.Minute, // lifted for replays and purges, which may take longer
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

func (s *Server) routes() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.metrics != nil {
		mux.Handle("GET /metrics", s.metrics.Handler())
	}
	mux.HandleFunc("GET /ca.pem", s.caPEM)
	mux.HandleFunc("GET /api/status", s.status)
	mux.HandleFunc("GET /api/targets", s.listTargets)
	mux.HandleFunc("GET /api/targets/{id}", s.getTarget)
	mux.HandleFunc("POST /api/targets/{id}/clear-gone", s.clearGone)
	mux.HandleFunc("GET /api/dead-letters", s.listDeadLetters)
	mux.HandleFunc("GET /api/dead-letters/{id}", s.getDeadLetter)
	mux.HandleFunc("POST /api/dead-letters/replay", s.replayDeadLetters)
	mux.HandleFunc("DELETE /api/dead-letters", s.purgeDeadLetters)
	s.mux = mux
}

// ServeHTTP marks the answer with the MarkHeader, checks the token, then
// routes. Unknown routes and methods get JSON errors like every other.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(MarkHeader, s.mark)
	// /healthz, which tells nothing, needs no token and is never refused.
	if r.URL.Path != "/healthz" {
		if s.auth && !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="hookproxy admin"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		if msg := fromWebPage(r, s.auth); msg != "" {
			s.log.Warn("admin request refused", "method", r.Method, "path", r.URL.Path, "status", http.StatusForbidden, "error", msg)
			writeError(w, http.StatusForbidden, msg)
			return
		}
	}
	h, pattern := s.mux.Handler(r)
	if pattern == "" {
		// No route: the mux's own handler would answer in plain text.
		// Let it decide between 404 and 405 (and set Allow), then answer
		// in JSON.
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		if rec.status == http.StatusMethodNotAllowed {
			methodNotAllowed(w, r)
			return
		}
		writeError(w, http.StatusNotFound, noRoute+r.URL.Path)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// methodNotAllowed answers 405 for r's method on its path; the caller
// sets Allow.
func methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s", r.Method, r.URL.Path))
}

// authorized compares the bearer token in constant time; hashing both
// sides first keeps the comparison from revealing the token's length.
func (s *Server) authorized(r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) == 1
}

// statusRecorder captures the status and headers of the mux's error
// handlers.
type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(p []byte) (int, error) { return len(p), nil }
func (r *statusRecorder) WriteHeader(code int)        { r.status = code }

// SetDraining marks the start (or, with false, the end) of shutdown:
// while draining, /readyz answers 503.
func (s *Server) SetDraining(draining bool) { s.draining.Store(draining) }

// Serve accepts connections on l and serves the admin API until Shutdown.
// It returns nil after Shutdown, and otherwise the error that stopped it.
// Serve closes l.
func (s *Server) Serve(l net.Listener) error {
	err := s.srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits for requests in progress
// (as http.Server.Shutdown does); Serve then returns nil.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.srv.Shutdown(ctx)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "alive"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	rd := s.readiness(s.now())
	code := http.StatusOK
	if !rd.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, rd)
}

// readiness gathers a probe as of now and evaluates it.
func (s *Server) readiness(now time.Time) Readiness {
	return Evaluate(s.probe(now), s.policy)
}

func (s *Server) probe(now time.Time) Probe {
	p := Probe{
		StoreErr:     s.storeCheck(),
		Draining:     s.draining.Load(),
		PendingBytes: s.store.Stats().PendingBytes,
	}
	if s.progress != nil {
		p.Overdue = s.progress.OldestDue(now)
	}
	return p
}

// lookupCheck is the default store check: a closed store answers every
// lookup with buffer.ErrClosed, an open one answers this one (there is no
// target 0) with buffer.ErrNotFound.
func (s *Server) lookupCheck() error {
	_, err := s.store.Target(0)
	if err == nil || errors.Is(err, buffer.ErrNotFound) {
		return nil
	}
	return err
}

func (s *Server) caPEM(w http.ResponseWriter, r *http.Request) {
	if len(s.caCert) == 0 {
		writeError(w, http.StatusNotFound, "no CA: hookproxy does not intercept HTTPS")
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("Content-Disposition", `attachment; filename="hookproxy-ca.pem"`)
	_, _ = w.Write(s.caCert)
}
