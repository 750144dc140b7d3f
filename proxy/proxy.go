// Package proxy is hookproxy's front end: an HTTP forward proxy that
// captures webhook requests into the buffer and passes everything else
// through.
//
// A request is captured when it is a proxy request (absolute form, as sent
// through HTTP_PROXY), its method is one of Options.CaptureMethods, its body
// is JSON (application/json or a +json media type) and its host matches
// Options.CaptureHosts. A captured request is answered 202 Accepted only
// after Store.Put has made the hook durable, and not one byte of it goes to
// the receiver. Everything else, CONNECT tunnels included, is forwarded
// with its bodies streamed both ways.
//
// The proxy is built on github.com/elazarl/goproxy. Serve wraps the
// listener so that client connections get TCP_QUICKACK re-armed around
// every read (python requests otherwise stalls ~40 ms per POST on a reused
// proxy connection), hijacked (CONNECT) connections get an idle timeout,
// and Shutdown closes them.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"

	"hookproxy/buffer"
)

// Store is what the proxy needs of the buffer.
type Store interface {
	// Put assigns h.ID (and h.Received when zero), commits and syncs; it
	// returns only when the hook is durable. It returns buffer.ErrQuota
	// when the pending-bytes quota is exhausted, buffer.ErrClosed after
	// the store is closed; any other error means the store is unavailable.
	Put(ctx context.Context, h *buffer.Hook) error
}

// Defaults applied by New to zero Options fields.
const (
	// DefaultMaxBodyBytes is the largest captured body when
	// Options.MaxBodyBytes is zero.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultIdleTimeout is the idle timeout of client connections when
	// Options.IdleTimeout is zero.
	DefaultIdleTimeout = 2 * time.Minute
)

// Values of Options.OnStoreError.
const (
	// OnStoreErrorForward sends the hook directly to its receiver when the
	// store is unavailable, and answers the app with the receiver's real
	// response.
	OnStoreErrorForward = "forward"
	// OnStoreErrorReject answers 503 Service Unavailable with Retry-After
	// when the store is unavailable.
	OnStoreErrorReject = "reject"
)

// HookIDHeader is the response header that carries a captured hook's id.
const HookIDHeader = "X-Hookproxy-Hook-Id"

// readHeaderTimeout bounds how long a client may take to send request
// headers. There is deliberately no Read/WriteTimeout: pass-through bodies
// stream for as long as they need.
const readHeaderTimeout = 10 * time.Second

// Options configures a Proxy. Only Store is required; the zero value of
// every other field is a documented default.
type Options struct {
	// Store receives the captured hooks. Required.
	Store Store
	// CaptureMethods are the request methods captured, compared
	// case-insensitively. Nil or empty means POST only.
	CaptureMethods []string
	// CaptureHosts are the host patterns captured: "example.com" (that
	// host only), "*.example.com" (any subdomain, not the apex) or "*"
	// (every host). They match the request URL's host name, without its
	// port, case-insensitively. Nil or empty means every host.
	CaptureHosts []string
	// MaxBodyBytes is the largest body captured; a larger one gets 413 and
	// nothing is stored. Zero means DefaultMaxBodyBytes (1 MiB).
	MaxBodyBytes int64
	// RequireValidJSON, when true, answers 400 to a captured request whose
	// body is not valid JSON (batching needs valid JSON). False stores
	// bodies as they come.
	RequireValidJSON bool
	// OnStoreError chooses what happens when Put fails with anything but
	// buffer.ErrQuota: OnStoreErrorForward ("forward", also the meaning of
	// "") or OnStoreErrorReject ("reject"). buffer.ErrQuota always gets
	// 507 Insufficient Storage.
	OnStoreError string
	// Transport sends pass-through requests and forward-fallback hooks
	// upstream. Nil means a new *http.Transport that never consults the
	// process's proxy environment (a sidecar whose HTTP_PROXY points at
	// itself would loop), with dial, TLS and idle timeouts and keep-alive
	// pooling. CONNECT tunnels dial with Transport's DialContext when it
	// is an *http.Transport that has one, and with a plain net.Dialer
	// otherwise.
	Transport http.RoundTripper
	// IdleTimeout is how long a client connection may stay idle: between
	// requests on a kept-alive connection, and in either direction of a
	// CONNECT tunnel. Zero means DefaultIdleTimeout (2 minutes).
	IdleTimeout time.Duration
	// Logger receives one line per captured hook and every error. Nil
	// discards.
	Logger *slog.Logger
	// OnCapture, when set, is called after each successful Put with the
	// hook (its ID set) and the capture latency, from the request's
	// arrival to the hook being durable. It must not block or modify h.
	OnCapture func(h *buffer.Hook, d time.Duration)
	// OnPassThrough, when set, is called for each request the proxy
	// forwards unchanged, CONNECT requests included, before it is sent
	// upstream. It must not block, modify r or read its body.
	OnPassThrough func(r *http.Request)
}

// Proxy is the capturing forward proxy. It is an http.Handler; Serve runs
// it on a listener with the connection handling it needs. Its methods are
// safe for concurrent use.
type Proxy struct {
	store       Store
	methods     []string
	hosts       hostMatcher
	maxBody     int64
	requireJSON bool
	reject      bool
	log         *slog.Logger
	onCapture   func(*buffer.Hook, time.Duration)
	onPass      func(*http.Request)

	upstream goproxy.RoundTripper
	// ownTransport is the transport New built, closed by Shutdown; nil
	// when the caller supplied Options.Transport.
	ownTransport *http.Transport

	gp    *goproxy.ProxyHttpServer
	srv   *http.Server
	idle  time.Duration
	conns connSet
}

// New validates opts and builds a Proxy.
func New(opts Options) (*Proxy, error) {
	if opts.Store == nil {
		return nil, errors.New("new proxy: Store is required")
	}
	methods, err := parseMethods(opts.CaptureMethods)
	if err != nil {
		return nil, fmt.Errorf("new proxy: %w", err)
	}
	hosts, err := parseHostPatterns(opts.CaptureHosts)
	if err != nil {
		return nil, fmt.Errorf("new proxy: %w", err)
	}
	maxBody := opts.MaxBodyBytes
	switch {
	case maxBody < 0:
		return nil, fmt.Errorf("new proxy: MaxBodyBytes %d is negative", maxBody)
	case maxBody == 0:
		maxBody = DefaultMaxBodyBytes
	}
	var reject bool
	switch opts.OnStoreError {
	case "", OnStoreErrorForward:
	case OnStoreErrorReject:
		reject = true
	default:
		return nil, fmt.Errorf("new proxy: OnStoreError %q is neither %q nor %q",
			opts.OnStoreError, OnStoreErrorForward, OnStoreErrorReject)
	}
	idle := opts.IdleTimeout
	switch {
	case idle < 0:
		return nil, fmt.Errorf("new proxy: IdleTimeout %v is negative", idle)
	case idle == 0:
		idle = DefaultIdleTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	p := &Proxy{
		store:       opts.Store,
		methods:     methods,
		hosts:       hosts,
		maxBody:     maxBody,
		requireJSON: opts.RequireValidJSON,
		reject:      reject,
		log:         log,
		onCapture:   opts.OnCapture,
		onPass:      opts.OnPassThrough,
		idle:        idle,
	}

	// goproxy dials CONNECT tunnels with Tr.DialContext, so it needs an
	// *http.Transport even when requests go through another RoundTripper.
	rt := opts.Transport
	dialTr, _ := rt.(*http.Transport)
	if rt == nil {
		p.ownTransport = newTransport()
		rt, dialTr = p.ownTransport, p.ownTransport
	} else if dialTr == nil {
		dialTr = &http.Transport{Proxy: nil, DialContext: newDialer().DialContext}
	}
	p.upstream = &upstream{rt: rt, log: log}

	// NewProxyHttpServer derives Tr (http.ProxyFromEnvironment) and
	// ConnectDial (HTTPS_PROXY) from the environment; in a sidecar whose
	// environment points at itself both would proxy to itself, so both are
	// replaced here (TRAPS.md, goproxy 1).
	gp := goproxy.NewProxyHttpServer()
	gp.Tr = dialTr
	gp.ConnectDial = nil
	gp.ConnectDialWithReq = nil
	gp.Verbose = false
	gp.Logger = goproxyLogger{log: log}
	// Pass-through is transparent: the client's Accept-Encoding reaches
	// the receiver and the response's encoding reaches the client.
	gp.KeepAcceptEncoding = true
	gp.NonproxyHandler = http.HandlerFunc(p.serveNonProxy)
	// Handlers run in registration order; onRequest decides capture versus
	// pass-through in one place.
	gp.OnRequest().DoFunc(p.onRequest)
	gp.OnRequest().HandleConnectFunc(p.onConnect)
	gp.OnResponse().DoFunc(p.onResponse)
	p.gp = gp

	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idle,
		ConnState:         p.connState,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return p, nil
}

// newDialer is the dialer of the default transport and of CONNECT tunnels.
func newDialer() *net.Dialer {
	return &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
}

// newTransport is the upstream transport used when Options.Transport is
// nil. Proxy is nil on purpose: the process's HTTP_PROXY points at us.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           newDialer().DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
		// Bodies pass through as the receiver encoded them.
		DisableCompression: true,
	}
}

// reqStateKey is the context key of a request's *reqState.
type reqStateKey struct{}

// reqState is what the upstream round trip reports back to ServeHTTP.
type reqState struct {
	// aborted is set when the upstream response body broke off.
	aborted atomic.Bool
}

// ServeHTTP handles one request: it captures it, forwards it, or opens a
// CONNECT tunnel. Served by a plain http.Server instead of Serve, it
// works, but tunnels get no idle timeout and outlive Shutdown.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := new(reqState)
	r = r.WithContext(context.WithValue(r.Context(), reqStateKey{}, st))
	p.gp.ServeHTTP(w, r)
	if st.aborted.Load() {
		// The upstream body broke off mid-way. With chunked encoding
		// net/http would end the response with a clean last chunk and the
		// client would take a truncated body for a whole one; closing the
		// connection makes the client see the failure.
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = c.Close()
		}
	}
}

// onRequest is the only goproxy request handler: it captures what the
// capture rule selects and prepares everything else for pass-through.
func (p *Proxy) onRequest(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
	start := time.Now()
	// Every upstream round trip goes through p.upstream, which turns
	// errors into a 502 instead of goproxy's 500 (or, in a MITM tunnel, a
	// bare EOF).
	ctx.RoundTripper = p.upstream
	if p.captures(r) {
		return p.capture(r, start)
	}
	upgrade := upgradeType(r.Header)
	removeHopHeaders(r.Header)
	if upgrade != "" {
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", upgrade)
	}
	if p.onPass != nil {
		p.onPass(r)
	}
	return r, nil
}

// tunnel accepts a CONNECT and relays bytes unchanged. HTTPS interception
// will return a ConnectMitm action from onConnect instead.
var tunnel = &goproxy.ConnectAction{Action: goproxy.ConnectAccept}

// onConnect decides what to do with a CONNECT request.
func (p *Proxy) onConnect(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
	// Requests inside an intercepted tunnel inherit the CONNECT's
	// RoundTripper.
	ctx.RoundTripper = p.upstream
	if p.onPass != nil {
		p.onPass(ctx.Req)
	}
	return tunnel, host
}

// onResponse removes the upstream connection's hop-by-hop headers from a
// pass-through response; a protocol switch keeps them, as it needs them.
func (p *Proxy) onResponse(resp *http.Response, _ *goproxy.ProxyCtx) *http.Response {
	if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		removeHopHeaders(resp.Header)
	}
	return resp
}

// serveNonProxy answers a request in origin form: someone talking to the
// proxy as if it were a web server.
func (p *Proxy) serveNonProxy(w http.ResponseWriter, r *http.Request) {
	p.log.Warn("non-proxy request refused", "method", r.Method, "status", http.StatusBadRequest)
	writeJSONError(w, http.StatusBadRequest,
		"hookproxy is an HTTP forward proxy: send requests through it in absolute form "+
			"(for example with HTTP_PROXY=http://<this address>), not to it")
}

// upstream sends requests to receivers for goproxy and answers failures
// with a 502 Bad Gateway.
type upstream struct {
	rt  http.RoundTripper
	log *slog.Logger
}

// RoundTrip implements goproxy.RoundTripper.
func (u *upstream) RoundTrip(req *http.Request, _ *goproxy.ProxyCtx) (*http.Response, error) {
	resp, err := u.rt.RoundTrip(req)
	if err != nil {
		err = withoutURL(err)
		if req.Context().Err() == nil {
			u.log.Warn("upstream request failed", "target", req.URL.Host, "status", http.StatusBadGateway, "error", err)
		}
		return jsonErrorResponse(req, http.StatusBadGateway, "upstream request failed: "+err.Error()), nil
	}
	st, _ := req.Context().Value(reqStateKey{}).(*reqState)
	// A 101 body is the upgraded connection (an io.ReadWriter goproxy
	// relies on): leave it unwrapped.
	if st != nil && resp.Body != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body = &abortBody{ReadCloser: resp.Body, st: st}
	}
	return resp, nil
}

// abortBody records in st that a response body ended with an error.
type abortBody struct {
	io.ReadCloser
	st *reqState
}

// Read implements io.Reader.
func (b *abortBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.st.aborted.Store(true)
	}
	return n, err
}

// withoutURL drops the URL from a transport error: it may carry a query
// string, which must not reach a log line.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// goproxyLogger sends goproxy's own messages to slog.
type goproxyLogger struct{ log *slog.Logger }

// Printf implements goproxy.Logger.
func (l goproxyLogger) Printf(format string, v ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	level := slog.LevelDebug
	// A tunnel ending on our own idle timeout is expected, not a warning.
	if strings.Contains(msg, "WARN:") && !strings.Contains(msg, "i/o timeout") {
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, "goproxy", "detail", msg)
}
