// Package proxy is hookproxy's front end: an HTTP forward proxy that
// captures webhook requests into the buffer and passes everything else
// through.
//
// A request is captured when it is a proxy request (absolute form, as sent
// through HTTP_PROXY, or read inside an intercepted HTTPS tunnel), its
// method is one of Options.CaptureMethods, its body is JSON
// (application/json or a +json media type) and its host matches
// Options.CaptureHosts. A captured request is answered 202 Accepted only
// after Store.Put has made the hook durable, and not one byte of it goes to
// the receiver. Everything else is forwarded with its bodies streamed both
// ways.
//
// HTTPS: python requests sends an https:// request through HTTPS_PROXY as a
// CONNECT and then speaks TLS inside the tunnel. With Options.TLSConfig set,
// a CONNECT to a host that Options.MITMHosts selects is intercepted: the
// proxy completes the app's TLS handshake with a certificate for the host
// (the app trusts the issuing CA), reads the requests inside the tunnel and
// applies the capture rule to each; what is not captured goes upstream over
// TLS that the upstream transport verifies. Every other CONNECT is relayed
// byte for byte.
//
// The proxy is built on github.com/elazarl/goproxy. Serve wraps the
// listener so that client connections get TCP_QUICKACK re-armed around
// every read (python requests otherwise stalls ~40 ms per POST on a reused
// proxy connection), hijacked (CONNECT) connections get an idle timeout,
// and Shutdown closes them. The TLS of an intercepted tunnel reads through
// the same wrapper, so requests inside it get the re-armed flag too.
package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
	"golang.org/x/net/http/httpguts"

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
	// ForwardTransport sends the hooks forwarded because the store failed
	// (OnStoreErrorForward). They go to subscriber URLs, so it should
	// check destinations as deliveries do. Nil means Transport.
	ForwardTransport http.RoundTripper
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
	// forwards unchanged, before it is sent upstream: requests inside
	// intercepted tunnels, and CONNECT requests whose tunnel is relayed
	// byte for byte (an intercepted CONNECT is not one). It must not
	// block, modify r or read its body.
	OnPassThrough func(r *http.Request)

	// TLSConfig, when set, turns HTTPS interception on: it returns the
	// server TLS configuration that answers the app inside a CONNECT
	// tunnel to host (a host name or IP address, without port), holding
	// a certificate for host that the app trusts. An error closes the
	// tunnel (logged with status 502: the app, which already got its
	// 200 to the CONNECT, sees its TLS handshake fail). Nil: every
	// CONNECT is relayed byte for byte.
	TLSConfig func(host string) (*tls.Config, error)
	// MITMHosts are the host patterns whose CONNECT tunnels are
	// intercepted when TLSConfig is set, in the syntax of CaptureHosts,
	// matched against the CONNECT's host without its port. Nil or empty
	// means every host.
	MITMHosts []string
	// UpstreamTLSConfig is the client TLS configuration of the default
	// transport (used when Transport is nil): which roots verify the
	// receivers of pass-through and forwarded requests. Nil means Go's
	// defaults: the system roots, and verification always on.
	UpstreamTLSConfig *tls.Config

	// ProxyAuth, when set to "user:password", makes the proxy require
	// those credentials in Proxy-Authorization (Basic) on every proxy
	// request and every CONNECT, answering 407 Proxy Authentication
	// Required otherwise. Requests inside a tunnel are covered by their
	// CONNECT's credentials (clients send them on the CONNECT only).
	// Empty: no authentication.
	ProxyAuth string
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

	// mitm answers a CONNECT to a host of mitmHosts; nil when
	// interception is off.
	mitm      *goproxy.ConnectAction
	tlsConfig func(string) (*tls.Config, error)
	mitmHosts hostMatcher
	// auth is the SHA-256 of "user:password"; nil: no authentication.
	auth *[sha256.Size]byte
	// active counts requests in progress inside intercepted tunnels,
	// which http.Server.Shutdown does not wait for.
	active activeSet

	upstream goproxy.RoundTripper
	// ownTransport is the transport New built, closed by Shutdown; nil
	// when the caller supplied Options.Transport.
	ownTransport *http.Transport

	gp    *goproxy.ProxyHttpServer
	srv   *http.Server
	idle  time.Duration
	conns connSet
	// dial opens the receiver side of relayed CONNECT tunnels.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
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
	hosts, err := parseHostPatterns("capture host", opts.CaptureHosts)
	if err != nil {
		return nil, fmt.Errorf("new proxy: %w", err)
	}
	mitmHosts, err := parseHostPatterns("MITM host", opts.MITMHosts)
	if err != nil {
		return nil, fmt.Errorf("new proxy: %w", err)
	}
	var auth *[sha256.Size]byte
	if opts.ProxyAuth != "" {
		user, _, ok := strings.Cut(opts.ProxyAuth, ":")
		if !ok || user == "" {
			// The value is a secret: it is not repeated here.
			return nil, errors.New("new proxy: ProxyAuth is not of the form user:password")
		}
		sum := sha256.Sum256([]byte(opts.ProxyAuth))
		auth = &sum
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
		tlsConfig:   opts.TLSConfig,
		mitmHosts:   mitmHosts,
		auth:        auth,
		idle:        idle,
	}
	if opts.TLSConfig != nil {
		p.mitm = &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: p.mitmTLSConfig}
	}

	// goproxy dials CONNECT tunnels with Tr.DialContext, so it needs an
	// *http.Transport even when requests go through another RoundTripper.
	rt := opts.Transport
	dialTr, _ := rt.(*http.Transport)
	if rt == nil {
		p.ownTransport = newTransport(opts.UpstreamTLSConfig)
		rt, dialTr = p.ownTransport, p.ownTransport
	} else if dialTr == nil {
		dialTr = &http.Transport{Proxy: nil, DialContext: newDialer().DialContext}
	}
	p.upstream = &upstream{rt: rt, forward: opts.ForwardTransport, log: log}
	p.dial = dialTr.DialContext
	if p.dial == nil {
		p.dial = newDialer().DialContext
	}

	// NewProxyHttpServer derives Tr (http.ProxyFromEnvironment) and
	// ConnectDial (HTTPS_PROXY) from the environment; in a sidecar whose
	// environment points at itself both would proxy to itself, so both are
	// replaced here.
	gp := goproxy.NewProxyHttpServer()
	gp.Tr = dialTr
	gp.ConnectDial = nil
	gp.ConnectDialWithReq = nil
	gp.ConnectionErrHandler = connectError
	gp.Verbose = false
	gp.Logger = goproxyLogger{log: log}
	// Intercepted tunnels speak HTTP/1.1 only (python requests offers
	// nothing else): one request loop, whose requests p.active can follow.
	gp.AllowHTTP2 = false
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
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return p, nil
}

// newDialer is the dialer of the default transport and of CONNECT tunnels.
func newDialer() *net.Dialer {
	return &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
}

// newTransport is the upstream transport used when Options.Transport is
// nil. Proxy is nil on purpose: the process's HTTP_PROXY points at us.
// tlsConfig nil means Go's defaults (system roots, verified).
func newTransport(tlsConfig *tls.Config) *http.Transport {
	if tlsConfig != nil {
		tlsConfig = tlsConfig.Clone()
	}
	return &http.Transport{
		TLSClientConfig:       tlsConfig,
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

// connKey is the context key of a request's client connection.
type connKey struct{}

// reqStateKey is the context key of a request's *reqState.
type reqStateKey struct{}

// reqState follows one request from its handler to its response.
type reqState struct {
	// aborted is set when the upstream response body broke off; ServeHTTP
	// reads it.
	aborted atomic.Bool
	// upgraded is set when the response switched protocols: goproxy has
	// hijacked the app's connection and relayed until one side ended.
	upgraded atomic.Bool
	// active is set for a request inside an intercepted tunnel: it is
	// counted there until finish, called once its response is written
	// (goproxy closes the response body then).
	active   *activeSet
	finished atomic.Bool
	// app is the app's connection of a request inside an intercepted
	// tunnel, when it can be watched: from the end of the request's body
	// to finish, its close cancels the request upstream (watchApp).
	app watcher

	mu        sync.Mutex
	cancel    context.CancelFunc // of the upstream request's context
	stopWatch func()             // nil: not watching
}

// stateOf returns r's *reqState, nil when it has none.
func stateOf(r *http.Request) *reqState {
	if r == nil {
		return nil
	}
	st, _ := r.Context().Value(reqStateKey{}).(*reqState)
	return st
}

// lastInTunnel reports whether the response to a request inside an
// intercepted tunnel should end the tunnel: Shutdown has begun.
func (st *reqState) lastInTunnel() bool {
	return st.active != nil && st.active.isDraining()
}

// finish ends the request's count in active and the watch of the app's
// connection; later calls do nothing.
func (st *reqState) finish() {
	if st.active == nil || !st.finished.CompareAndSwap(false, true) {
		return
	}
	st.mu.Lock()
	stop, cancel := st.stopWatch, st.cancel
	st.mu.Unlock()
	if stop != nil {
		stop()
	}
	if cancel != nil {
		cancel()
	}
	st.active.done()
}

// watchUpstream returns req made cancellable by the app's close: inside
// an intercepted tunnel nothing reads the app's side while the request is
// upstream, so it is watched, as net/http does on the plain path, from
// the end of the request's body (the watch reads what comes next) until
// finish. Outside a tunnel req is returned as it is.
func (st *reqState) watchUpstream(req *http.Request) *http.Request {
	if st.app == nil {
		return req
	}
	ctx, cancel := context.WithCancel(req.Context())
	req = req.WithContext(ctx)
	st.mu.Lock()
	st.cancel = cancel
	st.mu.Unlock()
	if req.Body == nil || req.Body == http.NoBody {
		st.watchApp()
	} else {
		req.Body = &eofBody{ReadCloser: req.Body, onEOF: st.watchApp}
	}
	return req
}

// watchApp starts watching the app's connection, once the request has
// been read whole (the watch reads what comes next), unless the request
// is already finished.
func (st *reqState) watchApp() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.finished.Load() || st.stopWatch != nil || st.cancel == nil {
		return
	}
	st.stopWatch = st.app.watchClose(st.cancel)
}

// eofBody is a request body that calls onEOF once it has been read to
// its end.
type eofBody struct {
	io.ReadCloser
	once  sync.Once
	onEOF func()
}

// Read implements io.Reader.
func (b *eofBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.once.Do(b.onEOF)
	}
	return n, err
}

// ServeHTTP handles one request: it captures it, forwards it, or opens a
// CONNECT tunnel. Served by a plain http.Server instead of Serve, it
// works, but tunnels get no idle timeout and outlive Shutdown.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Requests inside a tunnel never come here: they are covered by the
	// CONNECT's credentials.
	if p.auth != nil && (r.Method == http.MethodConnect || r.URL.IsAbs()) && !p.authorized(r) {
		p.log.Warn("proxy request refused: no valid credentials", "method", r.Method,
			"target", r.URL.Host, "status", http.StatusProxyAuthRequired)
		w.Header().Set("Proxy-Authenticate", `Basic realm="hookproxy"`)
		writeJSONError(w, http.StatusProxyAuthRequired,
			"proxy authentication required: use a proxy URL of the form http://user:password@host:port")
		return
	}
	st := new(reqState)
	r = r.WithContext(context.WithValue(r.Context(), reqStateKey{}, st))
	p.gp.ServeHTTP(w, r)
	if st.upgraded.Load() {
		// goproxy returns once either side of the upgraded connection
		// ends, and never closes the app's side.
		if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
			_ = c.Close()
		}
	}
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
	tun, _ := ctx.UserData.(*mitmTunnel)
	if tun == nil {
		return p.route(r, start)
	}

	// A request read inside an intercepted tunnel. Its head is read:
	// what the app sends from here to the end of goproxy's work on it
	// (which cancels the request's context) is its body, not counted
	// against the next head's budget.
	if tun.heads != nil {
		gen := tun.heads.requestStarted()
		context.AfterFunc(r.Context(), func() { tun.heads.requestEnded(gen) })
	}
	// Shutdown waits for it until its response is written; a response
	// made once Shutdown has begun also ends the tunnel.
	p.active.start()
	st := &reqState{active: &p.active, app: tun.app}
	r = r.WithContext(context.WithValue(r.Context(), reqStateKey{}, st))
	var resp *http.Response
	if r.Method == http.MethodOptions && r.RequestURI == "*" {
		// goproxy glues the "*" of a request for the server as a whole
		// onto the host ("https://host*"); route sends an empty path on
		// as "OPTIONS *".
		r.URL = &url.URL{Scheme: r.URL.Scheme, Host: r.Host}
	}
	switch {
	case r.ProtoMajor != 1:
		// net/http's server answers 505 on the plain path; goproxy would
		// pass the request on as HTTP/1.1.
		p.log.Warn("request refused: unsupported HTTP version", "tunnel", tun.host, "proto", r.Proto, "status", http.StatusHTTPVersionNotSupported)
		resp = closing(jsonErrorResponse(r, http.StatusHTTPVersionNotSupported, "HTTP version "+r.Proto+" is not supported: use HTTP/1.1"))
	case r.Method == http.MethodConnect:
		// goproxy would send it upstream as "CONNECT //host:port"; what
		// the app sends after it would be tunnel bytes, not requests.
		p.log.Warn("request refused: CONNECT inside a tunnel", "tunnel", tun.host, "status", http.StatusBadRequest)
		resp = closing(jsonErrorResponse(r, http.StatusBadRequest, "CONNECT inside a tunnel is not supported"))
	case !httpguts.ValidHostHeader(r.Host):
		// goproxy builds the URL of a request inside a tunnel from its
		// Host header, which net/http's server checks on the plain path
		// and goproxy does not: "host#" or "host/x?" would move the app's
		// path into the fragment or the query of the recorded target.
		p.log.Warn("request refused: malformed Host header", "tunnel", tun.host, "status", http.StatusBadRequest)
		resp = jsonErrorResponse(r, http.StatusBadRequest, "malformed Host header")
	case tun.carries(r.URL):
		r, resp = p.route(r, start)
	default:
		// The certificate and MITMHosts were chosen for the CONNECT's
		// host: a request for another host does not ride on them.
		p.log.Warn("request refused: host differs from its tunnel's", "target", r.URL.Host,
			"tunnel", tun.host, "status", http.StatusMisdirectedRequest)
		resp = jsonErrorResponse(r, http.StatusMisdirectedRequest,
			"request host "+r.URL.Host+" is not the host of its CONNECT tunnel")
	}
	if resp != nil {
		resp.Body = &trackedBody{ReadCloser: resp.Body, st: st}
		resp.Close = resp.Close || st.lastInTunnel()
	}
	return r, resp
}

// route captures r or prepares it for pass-through.
func (p *Proxy) route(r *http.Request, start time.Time) (*http.Request, *http.Response) {
	capture := p.captures(r)
	if !r.ProtoAtLeast(1, 1) && r.Header.Get("Content-Length") == "" &&
		(capture || r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch) {
		// HTTP/1.0 frames a request body by Content-Length alone
		// (RFC 1945 7.2.2); net/http ignores a Transfer-Encoding there and
		// reads an empty body, and what follows would be read as the
		// next request.
		p.log.Warn("request refused: HTTP/1.0 request without Content-Length", "method", r.Method,
			"target", r.URL.Host, "status", http.StatusLengthRequired)
		return r, closing(jsonErrorResponse(r, http.StatusLengthRequired, "an HTTP/1.0 request with a body needs a Content-Length"))
	}
	if capture {
		return p.capture(r, start)
	}
	if resp := maxForwards(r); resp != nil {
		return r, resp
	}
	if r.Method == http.MethodOptions && r.URL.Path == "" && r.URL.RawQuery == "" && r.URL.Opaque == "" {
		// An OPTIONS for a server as a whole (RFC 9112 3.2.4): it goes
		// on as "OPTIONS *", not "OPTIONS /".
		r.URL.Opaque = "*"
	}
	upgrade := upgradeType(r.Header)
	removeHopHeaders(r.Header)
	// goproxy relays only websocket upgrades (it drops Connection from
	// any other); another upgrade is declined: Upgrade stays removed.
	if strings.EqualFold(upgrade, "websocket") {
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", upgrade)
	}
	if p.onPass != nil {
		p.onPass(r)
	}
	return r, nil
}

// maxForwards applies Max-Forwards to a TRACE or OPTIONS request
// (RFC 9110 7.6.2): at 0 the proxy is the final recipient and answers
// itself, which resp is; otherwise the value goes on less one.
func maxForwards(r *http.Request) (resp *http.Response) {
	if r.Method != http.MethodTrace && r.Method != http.MethodOptions {
		return nil
	}
	v, ok := r.Header["Max-Forwards"]
	if !ok || len(v) != 1 {
		return nil
	}
	n, err := strconv.ParseUint(textproto.TrimString(v[0]), 10, 63)
	if err != nil {
		return nil // not a count: passed on as it came
	}
	if n > 0 {
		r.Header.Set("Max-Forwards", strconv.FormatUint(n-1, 10))
		return nil
	}
	if r.Method == http.MethodOptions {
		resp = jsonResponse(r, http.StatusOK, nil)
		resp.Header.Del("Content-Type")
		return resp
	}
	// TRACE echoes the request it got, without the fields that carry
	// credentials (RFC 9110 9.3.8).
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s %s\r\nHost: %s\r\n", r.Method, r.RequestURI, r.Proto, r.Host)
	_ = r.Header.WriteSubset(&b, map[string]bool{
		"Authorization": true, "Proxy-Authorization": true, "Cookie": true,
	})
	b.WriteString("\r\n")
	resp = jsonResponse(r, http.StatusOK, b.Bytes())
	resp.Header.Set("Content-Type", "message/http")
	return resp
}

// tunnel accepts a CONNECT and relays bytes unchanged.
var tunnel = &goproxy.ConnectAction{Action: goproxy.ConnectAccept}

// onConnect decides what to do with a CONNECT request: intercept it when
// interception is on and MITMHosts selects its host, relay it otherwise.
func (p *Proxy) onConnect(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
	// Requests inside an intercepted tunnel inherit the CONNECT's
	// RoundTripper and UserData; a relayed tunnel dials with dialTunnel.
	ctx.RoundTripper = p.upstream
	// The CONNECT names host:port; patterns hold host names only.
	if p.mitm != nil && p.mitmHosts.match(ctx.Req.URL.Hostname()) {
		tun := newMITMTunnel(ctx.Req.URL)
		tun.app, _ = ctx.Req.Context().Value(connKey{}).(watcher)
		if tun.heads, _ = ctx.Req.Context().Value(connKey{}).(headLimiter); tun.heads != nil {
			tun.heads.limitHeads()
		}
		ctx.UserData = tun
		return p.mitm, host
	}
	if p.onPass != nil {
		p.onPass(ctx.Req)
	}
	rt := &relayTunnel{p: p}
	ctx.UserData, ctx.Dialer = rt, rt.dial
	return tunnel, host
}

// relayTunnel is the ctx.UserData of a relayed CONNECT: it dials with
// dialTunnel and remembers whether that failed, for connectError.
type relayTunnel struct {
	p          *Proxy
	dialFailed bool
}

func (rt *relayTunnel) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := rt.p.dialTunnel(ctx, network, addr)
	rt.dialFailed = err != nil
	return c, err
}

// connectError is goproxy's ConnectionErrHandler. Only a failed dial of
// a relayed CONNECT gets an answer (goproxy closes the connection after
// it); goproxy's other calls come once a tunnel is established, when no
// HTTP answer can be written.
func connectError(w io.Writer, ctx *goproxy.ProxyCtx, err error) {
	if rt, ok := ctx.UserData.(*relayTunnel); !ok || !rt.dialFailed {
		return
	}
	_ = closing(jsonErrorResponse(nil, http.StatusBadGateway, "upstream request failed: "+withoutURL(err).Error())).Write(w)
}

// mitmTLSConfig is the intercepting ConnectAction's TLSConfig: the
// server configuration for the CONNECT's host.
func (p *Proxy) mitmTLSConfig(host string, ctx *goproxy.ProxyCtx) (*tls.Config, error) {
	cfg, err := p.tlsConfig(ctx.Req.URL.Hostname())
	if err != nil {
		p.log.Warn("intercept failed: no certificate", "target", host, "status", http.StatusBadGateway, "error", err)
		return nil, err
	}
	return cfg, nil
}

// mitmTunnel is the ctx.UserData of an intercepted CONNECT, which every
// request read inside the tunnel inherits.
type mitmTunnel struct {
	host  string      // normalized host name of the CONNECT
	port  string      // its port; "443" when the CONNECT named none
	app   watcher     // the app's connection; nil when Serve did not accept it
	heads headLimiter // the same, bounding request heads; nil likewise
}

// headLimiter is an accepted connection that bounds the request heads
// read from it once it is an intercepted tunnel (see headBudget).
type headLimiter interface {
	limitHeads()
	requestStarted() uint64
	requestEnded(gen uint64)
}

func newMITMTunnel(u *url.URL) *mitmTunnel {
	t := &mitmTunnel{host: normalizeHost(u.Hostname()), port: u.Port()}
	if t.port == "" {
		t.port = "443"
	}
	return t
}

// carries reports whether a request for u belongs in the tunnel: same
// host, same port (python requests leaves out the default port of the
// scheme in Host).
func (t *mitmTunnel) carries(u *url.URL) bool {
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	return normalizeHost(u.Hostname()) == t.host && port == t.port
}

// onResponse is goproxy's response handler, for every answer: from
// upstream and hookproxy's own. The body must stay the one goproxy got:
// it drops Content-Length from a response whose body a filter replaced.
func (p *Proxy) onResponse(resp *http.Response, _ *goproxy.ProxyCtx) *http.Response {
	if resp != nil && resp.Header != nil {
		// net/http would sniff a Content-Type for a response without
		// one; a nil entry (written as nothing) keeps it without.
		if _, ok := resp.Header["Content-Type"]; !ok {
			resp.Header["Content-Type"] = nil
		}
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
	rt      http.RoundTripper
	forward http.RoundTripper // hooks forwarded by capture; nil: rt
	log     *slog.Logger
}

// forwardedKey marks the context of a hook that capture forwards.
type forwardedKey struct{}

// RoundTrip implements goproxy.RoundTripper.
func (u *upstream) RoundTrip(req *http.Request, _ *goproxy.ProxyCtx) (*http.Response, error) {
	// net/http would send its own User-Agent for a request without one;
	// an empty value sends none, as the app did.
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header.Set("User-Agent", "")
	}
	rt := u.rt
	if u.forward != nil && req.Context().Value(forwardedKey{}) != nil {
		rt = u.forward
	}
	if st := stateOf(req); st != nil {
		req = st.watchUpstream(req)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		err = withoutURL(err)
		if req.Context().Err() == nil {
			u.log.Warn("upstream request failed", "target", req.URL.Host, "status", http.StatusBadGateway, "error", err)
		}
		resp = jsonErrorResponse(req, http.StatusBadGateway, "upstream request failed: "+err.Error())
		if req.Body != nil && req.Body != http.NoBody && req.Context().Value(forwardedKey{}) == nil {
			// The request body may be unread, or its framing broken
			// (the failure may be that): inside a tunnel, goproxy would
			// read what follows as the next request. A forwarded hook's
			// body was read whole before.
			closing(resp)
		}
	} else if resp.StatusCode != http.StatusSwitchingProtocols {
		// The upstream connection's hop-by-hop headers are not the
		// app's; a protocol switch keeps them, as it needs them.
		removeHopHeaders(resp.Header)
		if resp.ContentLength < 0 {
			// goproxy flushes each write only when it sees this header;
			// net/http replaces it with its own framing.
			resp.Header["Transfer-Encoding"] = []string{"chunked"}
		}
	}
	st := stateOf(req)
	if st == nil {
		return resp, nil
	}
	if st.lastInTunnel() {
		resp.Close = true
	}
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.Body == nil {
		// A 101 body is the upgraded connection (an io.ReadWriter goproxy
		// relies on): left unwrapped, and a tunnel of its own from here
		// on, no longer a request in progress.
		st.upgraded.Store(resp.StatusCode == http.StatusSwitchingProtocols)
		st.finish()
		return resp, nil
	}
	resp.Body = &trackedBody{ReadCloser: resp.Body, st: st}
	return resp, nil
}

// trackedBody is a response body that records in st that it ended with
// an error, and that finishes st's request when closed.
type trackedBody struct {
	io.ReadCloser
	st *reqState
}

// Read implements io.Reader.
func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.st.aborted.Store(true)
	}
	return n, err
}

// Close implements io.Closer.
func (b *trackedBody) Close() error {
	err := b.ReadCloser.Close()
	b.st.finish()
	return err
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

// goproxy's messages can hold a whole URL or request line, or a header
// line that net/textproto quotes in its parse error ("malformed MIME
// header line: %q", when a name or value holds a byte it refuses); what
// may carry a secret is cut out of them (see redactSecrets).
var (
	queryPart      = regexp.MustCompile(`\?[^\s"'<>]*`)
	userinfoPart   = regexp.MustCompile(`//[^/\s@"'<>]*@`)
	headerLinePart = regexp.MustCompile(`(malformed MIME header[^"]*)"(?:[^"\\]|\\.)*"`)
)

// redactSecrets replaces the query strings and user:password@ parts of the
// URLs in msg, and the header lines quoted in it (an Authorization or
// API key value), which must not reach a log line.
func redactSecrets(msg string) string {
	msg = headerLinePart.ReplaceAllString(msg, `$1"[header]"`)
	msg = queryPart.ReplaceAllString(msg, "?[query]")
	return userinfoPart.ReplaceAllString(msg, "//[userinfo]@")
}

// Printf implements goproxy.Logger.
func (l goproxyLogger) Printf(format string, v ...any) {
	msg := redactSecrets(strings.TrimSpace(fmt.Sprintf(format, v...)))
	level := slog.LevelDebug
	// A tunnel ending on our own idle timeout is expected, not a warning.
	if strings.Contains(msg, "WARN:") && !strings.Contains(msg, "i/o timeout") {
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, "goproxy", "detail", msg)
}
