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
// The proxy is built on github.com/elazarl/goproxy, which relays CONNECT
// tunnels and handles every proxy request. An intercepted tunnel is served
// by net/http's own server (one for all tunnels), not by goproxy's request
// loop: each request inside it is parsed, bounded and timed as on the
// proxy connection (400, 431, 505 for what cannot be read), made absolute
// (https://host:port/...) and handed to goproxy as a plain proxy request.
//
// Serve wraps the listener so that client connections get TCP_QUICKACK
// re-armed around every read (python requests otherwise stalls ~40 ms per
// POST on a reused proxy connection), hijacked (CONNECT) connections get
// an idle timeout, and Shutdown closes them. The TLS of an intercepted
// tunnel reads through the same wrapper, so requests inside it get the
// re-armed flag too.
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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/elazarl/goproxy"
	"golang.org/x/sync/semaphore"

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
	// DefaultReadHeaderTimeout bounds the read of a request head when
	// Options.ReadHeaderTimeout is zero.
	DefaultReadHeaderTimeout = 10 * time.Second
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
	// DialControl, when set, is the net.Dialer Control of every
	// connection the proxy dials itself: with the default Transport
	// (requests passed through, also inside intercepted tunnels) and for
	// relayed CONNECT tunnels unless Transport has a DialContext. An error
	// refuses the connection before a packet is sent: the app gets 502
	// with it. hookproxy refuses its own listeners with it (a request
	// through the proxy to 127.0.0.1 would otherwise reach an admin API
	// bound to loopback). Nil: no check.
	DialControl func(network, address string, c syscall.RawConn) error
	// ForwardTransport sends the hooks forwarded because the store failed
	// (OnStoreErrorForward). They go to subscriber URLs, so it should
	// check destinations as deliveries do. Nil means Transport.
	ForwardTransport http.RoundTripper
	// IdleTimeout is how long a client connection may stay idle: between
	// requests on a kept-alive connection (also inside an intercepted
	// tunnel), in either direction of a relayed CONNECT tunnel or an
	// upgraded connection, while the app sends a request body (also the
	// rest of one that an answer left unread, which net/http reads to
	// keep the connection), and while a write to an app inside an
	// intercepted tunnel waits. Zero means DefaultIdleTimeout (2 minutes).
	IdleTimeout time.Duration
	// ReadHeaderTimeout is how long a client may take to send a request
	// head once it has begun on a proxy connection. Inside an
	// intercepted tunnel IdleTimeout bounds the TLS handshake and every
	// head (net/http would count the first one from the tunnel's start).
	// There is deliberately no timeout on a whole request: pass-through
	// bodies stream for as long as they need. Zero means
	// DefaultReadHeaderTimeout (10 seconds).
	ReadHeaderTimeout time.Duration
	// MaxConns bounds the app connections served at once: past it,
	// Serve accepts no more until one closes, and new connections wait
	// in the listen queue. Each one holds a file descriptor (two while
	// it relays a tunnel or passes a request on), and a store that
	// cannot open a file when it needs one may crash the process, so
	// it keeps a share of the descriptors for the store. Zero: no bound.
	MaxConns int
	// MaxCapturingBytes bounds the body bytes of the hooks being captured
	// at once, from the start of a body's read until the hook is stored
	// (or handed on to be forwarded when the store fails): a capture that
	// would take them past it waits, its body unread, until others are
	// done, in the order they came. A body counts at its Content-Length,
	// or at MaxBodyBytes when it has none or is encoded (what it decodes
	// to is not known before it is read, and an encoded body a little
	// over MaxBodyBytes on the wire is read too). Zero: no bound;
	// otherwise at least MaxBodyBytes, or a hook that size could never
	// be captured.
	MaxCapturingBytes int64
	// OnCaptureWait, when set, is called each time a capture waits for
	// room under MaxCapturingBytes. It must not block.
	OnCaptureWait func()
	// Logger receives one line per captured hook and every error. Nil
	// discards.
	Logger *slog.Logger
	// OnCapture, when set, is called after each successful Put with the
	// hook (its ID set) and the capture latency, from the request's
	// arrival to the hook being durable. It must not block or modify h.
	OnCapture func(h *buffer.Hook, d time.Duration)
	// OnRefuse, when set, is called for each hook answered without being
	// kept, with the reason (one of RefusalReasons). It must not block.
	OnRefuse func(reason string)
	// OnForward, when set, is called for each hook sent straight to its
	// receiver because the store could not keep it (OnStoreErrorForward).
	// It must not block.
	OnForward func()
	// OnPassThrough, when set, is called for each request the proxy
	// forwards unchanged, before it is sent upstream: requests inside
	// intercepted tunnels, and CONNECT requests whose tunnel is relayed
	// byte for byte (an intercepted CONNECT is not one). It must not
	// block, modify r or read its body.
	OnPassThrough func(r *http.Request)

	// TLSConfig, when set, turns HTTPS interception on: it returns the
	// server TLS configuration that answers the app inside a CONNECT
	// tunnel to host (a host name or IP address, without port), holding
	// a certificate for host that the app trusts. Its NextProtos is
	// replaced: tunnels speak HTTP/1.1. An error closes the tunnel
	// (logged with status 502: the app, which already got its 200 to the
	// CONNECT, sees its TLS handshake fail). Nil: every CONNECT is
	// relayed byte for byte.
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

	// ProxyAuth, when set to "user:password" (neither empty), makes the
	// proxy require those credentials in Proxy-Authorization (Basic) on
	// every proxy request and every CONNECT, answering 407 Proxy
	// Authentication Required otherwise. Requests inside a tunnel are
	// covered by their CONNECT's credentials (clients send them on the
	// CONNECT only). Empty: no authentication.
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
	onRefuse    func(string)
	onForward   func()
	onPass      func(*http.Request)

	// tlsConfig answers a CONNECT to a host of mitmHosts; nil when
	// interception is off.
	tlsConfig func(string) (*tls.Config, error)
	mitmHosts hostMatcher
	// auth is the SHA-256 of "user:password"; nil: no authentication.
	auth *[sha256.Size]byte

	upstream goproxy.RoundTripper
	// ownTransport is the transport New built, closed by Shutdown; nil
	// when the caller supplied Options.Transport.
	ownTransport *http.Transport

	gp  *goproxy.ProxyHttpServer
	srv *http.Server
	// tunnels serves the app's side of every intercepted tunnel, each
	// on a listener of one connection (see intercept).
	tunnels *http.Server
	idle    time.Duration
	conns   connSet
	// slots holds a token per app connection open when MaxConns bounds
	// them; nil: no bound.
	slots chan struct{}
	// lastFull is when the log last said the connections were at the
	// bound (Unix nanoseconds).
	lastFull atomic.Int64
	// capturing holds the body bytes of the captures in progress when
	// MaxCapturingBytes bounds them; nil: no bound.
	capturing *semaphore.Weighted
	// maxCapturing is MaxCapturingBytes.
	maxCapturing int64
	// lastCapturingFull is when the log last said captures wait for
	// room (Unix nanoseconds).
	lastCapturingFull atomic.Int64
	onCaptureWait     func()
	// onReserve, when set, is called with the bytes each capture has
	// taken under MaxCapturingBytes (for tests).
	onReserve func(n int64)
	// onFull, when set, is called each time Serve waits for a connection
	// to close before it accepts another (for tests).
	onFull func()
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
		user, pass, ok := strings.Cut(opts.ProxyAuth, ":")
		if !ok || user == "" || pass == "" {
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
	if opts.MaxConns < 0 {
		return nil, fmt.Errorf("new proxy: MaxConns %d is negative", opts.MaxConns)
	}
	var capturing *semaphore.Weighted
	switch {
	case opts.MaxCapturingBytes < 0:
		return nil, fmt.Errorf("new proxy: MaxCapturingBytes %d is negative", opts.MaxCapturingBytes)
	case opts.MaxCapturingBytes > 0 && opts.MaxCapturingBytes < maxBody:
		return nil, fmt.Errorf("new proxy: MaxCapturingBytes %d is below MaxBodyBytes %d", opts.MaxCapturingBytes, maxBody)
	case opts.MaxCapturingBytes > 0:
		capturing = semaphore.NewWeighted(opts.MaxCapturingBytes)
	}
	readHeader := opts.ReadHeaderTimeout
	switch {
	case readHeader < 0:
		return nil, fmt.Errorf("new proxy: ReadHeaderTimeout %v is negative", readHeader)
	case readHeader == 0:
		readHeader = DefaultReadHeaderTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	p := &Proxy{
		store:         opts.Store,
		methods:       methods,
		hosts:         hosts,
		maxBody:       maxBody,
		requireJSON:   opts.RequireValidJSON,
		reject:        reject,
		log:           log,
		onCapture:     opts.OnCapture,
		onRefuse:      opts.OnRefuse,
		onForward:     opts.OnForward,
		capturing:     capturing,
		maxCapturing:  opts.MaxCapturingBytes,
		onCaptureWait: opts.OnCaptureWait,
		onPass:        opts.OnPassThrough,
		tlsConfig:     opts.TLSConfig,
		mitmHosts:     mitmHosts,
		auth:          auth,
		idle:          idle,
	}
	if opts.MaxConns > 0 {
		p.slots = make(chan struct{}, opts.MaxConns)
	}

	// goproxy dials CONNECT tunnels with Tr.DialContext, so it needs an
	// *http.Transport even when requests go through another RoundTripper.
	rt := opts.Transport
	dialTr, _ := rt.(*http.Transport)
	if rt == nil {
		p.ownTransport = newTransport(opts.UpstreamTLSConfig, opts.DialControl)
		rt, dialTr = p.ownTransport, p.ownTransport
	} else if dialTr == nil {
		dialTr = &http.Transport{Proxy: nil, DialContext: newDialer(opts.DialControl).DialContext}
	}
	p.upstream = &upstream{rt: rt, forward: opts.ForwardTransport, log: log}
	p.dial = dialTr.DialContext
	if p.dial == nil {
		p.dial = newDialer(opts.DialControl).DialContext
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

	withConn := func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: readHeader,
		IdleTimeout:       idle,
		ConnState:         p.connState,
		ConnContext:       withConn,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	p.tunnels = &http.Server{
		Handler: http.HandlerFunc(p.serveInTunnel),
		// net/http bounds a connection's first request head, and its TLS
		// handshake, from the connection's start, not from the head's
		// first byte: an app may open a tunnel and use it later, as it
		// may leave a connection idle between requests.
		ReadHeaderTimeout: idle,
		IdleTimeout:       idle,
		ConnState:         tunnelConnState,
		ConnContext:       withConn,
		ErrorLog:          p.srv.ErrorLog,
		// Not nil: no HTTP/2. Tunnels offer http/1.1 alone in ALPN, what
		// python requests speaks.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		// "OPTIONS *" inside a tunnel is for the receiver, not for us.
		DisableGeneralOptionsHandler: true,
	}
	return p, nil
}

// newDialer is the dialer of the default transport and of CONNECT
// tunnels; control is Options.DialControl.
func newDialer(control func(network, address string, c syscall.RawConn) error) *net.Dialer {
	return &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: control}
}

// newTransport is the upstream transport used when Options.Transport is
// nil. Proxy is nil on purpose: the process's HTTP_PROXY points at us.
// tlsConfig nil means Go's defaults (system roots, verified); control is
// Options.DialControl.
func newTransport(tlsConfig *tls.Config, control func(network, address string, c syscall.RawConn) error) *http.Transport {
	if tlsConfig != nil {
		tlsConfig = tlsConfig.Clone()
	}
	return &http.Transport{
		TLSClientConfig:       tlsConfig,
		Proxy:                 nil,
		DialContext:           newDialer(control).DialContext,
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
	// aborted is set when the upstream response body broke off; forward
	// reads it.
	aborted atomic.Bool
	// upgraded is set when the response switched protocols: goproxy has
	// hijacked the app's connection and relayed until one side ended.
	upgraded atomic.Bool
}

// stateOf returns r's *reqState, nil when it has none.
func stateOf(r *http.Request) *reqState {
	if r == nil {
		return nil
	}
	st, _ := r.Context().Value(reqStateKey{}).(*reqState)
	return st
}

// ServeHTTP handles one request on a proxy connection: it captures it,
// forwards it, intercepts a CONNECT tunnel or relays one. Served by a
// plain http.Server instead of Serve, it works, but tunnels get no idle
// timeout and outlive Shutdown.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Requests inside a tunnel never come here: they are covered by the
	// CONNECT's credentials.
	if p.auth != nil && (r.Method == http.MethodConnect || r.URL.IsAbs()) && !p.authorized(r) {
		p.log.Warn("proxy request refused: no valid credentials", "method", r.Method,
			"target", r.URL.Host, "status", http.StatusProxyAuthRequired)
		w.Header().Set("Proxy-Authenticate", `Basic realm="hookproxy"`)
		writeJSONError(w, http.StatusProxyAuthRequired,
			"proxy authentication required: use a proxy URL of the form http://user:password@host:port")
		p.boundUnreadBody(r)
		return
	}
	// The CONNECT names host:port; patterns hold host names only.
	if r.Method == http.MethodConnect && p.tlsConfig != nil && p.mitmHosts.match(r.URL.Hostname()) {
		p.intercept(w, r)
		return
	}
	p.forward(w, r)
}

// forward hands r, a proxy request in absolute form or a CONNECT to
// relay, to goproxy, and cleans up after what it leaves.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request) {
	st := new(reqState)
	r = r.WithContext(context.WithValue(r.Context(), reqStateKey{}, st))
	var body *idleBody
	if c, ok := r.Context().Value(connKey{}).(net.Conn); ok && r.Method != http.MethodConnect && r.Body != http.NoBody {
		// A body that stalls half-way ends at the idle timeout: otherwise
		// it held its connection (and its place under MaxConns) for as
		// long as the app kept it open. r is a copy, net/http's stays.
		body = &idleBody{ReadCloser: r.Body, conn: c, idle: p.idle}
		r.Body = body
	}
	p.gp.ServeHTTP(w, r)
	if body != nil {
		// An answer that left the body unread (a non-proxy request, a
		// refused hook): net/http reads the rest, under the idle timeout
		// too (see boundUnreadBody).
		body.bound()
	}
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
// Requests inside intercepted tunnels come here as proxy requests too,
// from serveInTunnel.
func (p *Proxy) onRequest(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
	// Every upstream round trip goes through p.upstream, which turns
	// errors into a 502 instead of goproxy's 500.
	ctx.RoundTripper = p.upstream
	return p.route(r, time.Now())
}

// route captures r or prepares it for pass-through.
func (p *Proxy) route(r *http.Request, start time.Time) (*http.Request, *http.Response) {
	keepPathEscapes(r.URL)
	capture := p.captures(r)
	if !r.ProtoAtLeast(1, 1) && r.Header.Get("Content-Length") == "" &&
		(capture || r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch) {
		// HTTP/1.0 frames a request body by Content-Length alone
		// (RFC 1945 7.2.2); net/http ignores a Transfer-Encoding there and
		// reads an empty body, and what follows would be read as the
		// next request.
		p.log.Warn("request refused: HTTP/1.0 request without Content-Length", "method", r.Method,
			"target", r.URL.Host, "status", http.StatusLengthRequired)
		if capture {
			p.refused(RefusedBadRequest)
		}
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

// pathBytes are the bytes a request path may hold as they are, as Go's
// URL takes them (RFC 3986 pchar, "/", and "[" and "]", which browsers
// leave alone); '%' starts an escape.
const pathBytes = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/[]%"

// keepPathEscapes makes u's path go on, and be stored with a hook, as
// the app wrote it. A path holding a byte that must be escaped ("|",
// "^", "{", raw UTF-8: python's urllib and other clients send them as
// they are) is written by net/http from its decoded form, which undid
// the app's escapes as well: "/a%2Fb|c" went on as "/a/b%7Cc", another
// path. Escaping only those bytes keeps the app's escapes.
func keepPathEscapes(u *url.URL) {
	if u.RawPath == "" || u.EscapedPath() == u.RawPath {
		return
	}
	var b strings.Builder
	for i := range len(u.RawPath) {
		if c := u.RawPath[i]; strings.IndexByte(pathBytes, c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	u.RawPath = b.String()
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

// onConnect relays a CONNECT request's tunnel byte for byte (an
// intercepted one never reaches goproxy: see ServeHTTP).
func (p *Proxy) onConnect(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
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
// with a 502 Bad Gateway, or a 400 when the app's body failed.
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
	resp, err := rt.RoundTrip(req)
	if b, ok := req.Body.(*idleBody); ok && err != nil && b.readError() != nil {
		// The app's body failed (broken chunked framing, cut short,
		// stalled past the idle timeout): a malformed request, not a
		// receiver that failed. What follows it is no request to read.
		berr := b.readError()
		u.log.Warn("request refused: cannot read body", "target", req.URL.Host, "status", http.StatusBadRequest, "error", berr)
		return closing(jsonErrorResponse(req, http.StatusBadRequest, "cannot read request body: "+berr.Error())), nil
	}
	if err != nil {
		err = withoutURL(err)
		if req.Context().Err() == nil {
			u.log.Warn("upstream request failed", "target", req.URL.Host, "status", http.StatusBadGateway, "error", err)
		}
		resp = jsonErrorResponse(req, http.StatusBadGateway, "upstream request failed: "+err.Error())
		if req.Body != nil && req.Body != http.NoBody && req.Context().Value(forwardedKey{}) == nil {
			// The request body may be unread, or its framing broken
			// (the failure may be that): what follows it is no request
			// to read. A forwarded hook's body was read whole before.
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
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.Body == nil {
		// A 101 body is the upgraded connection (an io.ReadWriter goproxy
		// relies on): left unwrapped.
		st.upgraded.Store(resp.StatusCode == http.StatusSwitchingProtocols)
		return resp, nil
	}
	resp.Body = &trackedBody{ReadCloser: resp.Body, st: st}
	return resp, nil
}

// trackedBody is a response body that records in st that it ended with
// an error.
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

// goproxy's messages can hold a whole URL or request line; what may
// carry a secret is cut out of them (see redactSecrets). (goproxy reads
// no request itself, so it quotes no header line: net/http reads them
// all, inside intercepted tunnels too, and logs none.)
var (
	queryPart    = regexp.MustCompile(`\?[^\s"'<>]*`)
	userinfoPart = regexp.MustCompile(`//[^/\s@"'<>]*@`)
)

// redactSecrets replaces the query strings and user:password@ parts of the
// URLs in msg, which must not reach a log line.
func redactSecrets(msg string) string {
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
