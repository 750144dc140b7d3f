package proxy

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/idna"

	"hookproxy/buffer"
)

// hopHeaders describe one connection, not the request: they are neither
// stored with a hook nor forwarded (RFC 9110 7.6.1, plus the proxy
// headers). Headers named by Connection are removed too.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// removeHopHeaders deletes the hop-by-hop headers from h, in place.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// upgradeType returns the protocol a request asks to switch to, or "".
func upgradeType(h http.Header) string {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(f), "upgrade") {
				return h.Get("Upgrade")
			}
		}
	}
	return ""
}

// hookHeader returns the headers stored with a hook: the end-to-end
// headers of the request. Content-Length is recomputed on delivery, and
// Expect belonged to the exchange with the proxy, which is over.
func hookHeader(src http.Header) http.Header {
	h := src.Clone()
	removeHopHeaders(h)
	h.Del("Content-Length")
	h.Del("Expect")
	if len(h) == 0 {
		return nil
	}
	return h
}

// parseMethods normalises Options.CaptureMethods.
func parseMethods(in []string) ([]string, error) {
	if len(in) == 0 {
		return []string{http.MethodPost}, nil
	}
	out := make([]string, 0, len(in))
	for _, m := range in {
		m = strings.ToUpper(strings.TrimSpace(m))
		switch {
		case m == "" || strings.ContainsFunc(m, func(r rune) bool { return r <= ' ' || r > '~' }):
			return nil, fmt.Errorf("capture method %q is not a method name", m)
		case m == http.MethodConnect:
			return nil, errors.New("capture method CONNECT cannot be captured: it opens a tunnel")
		}
		out = append(out, m)
	}
	return out, nil
}

// CheckCaptureMethods says why methods cannot be Options.CaptureMethods,
// or returns nil; New refuses the same lists.
func CheckCaptureMethods(methods []string) error {
	_, err := parseMethods(methods)
	return err
}

// CheckHostPatterns says why patterns cannot be Options.CaptureHosts or
// Options.MITMHosts, or returns nil; New refuses the same lists.
func CheckHostPatterns(patterns []string) error {
	_, err := parseHostPatterns("pattern", patterns)
	return err
}

// hostPattern is one parsed Options.CaptureHosts entry.
type hostPattern struct {
	any    bool   // "*"
	suffix string // "*.example.com" -> ".example.com"
	exact  string // "example.com"
}

// hostMatcher matches request host names; an empty one matches every host.
type hostMatcher []hostPattern

// parseHostPatterns parses Options.CaptureHosts or Options.MITMHosts;
// what names them in errors ("capture host", "MITM host").
func parseHostPatterns(what string, in []string) (hostMatcher, error) {
	m := make(hostMatcher, 0, len(in))
	for _, s := range in {
		hp, err := parseHostPattern(s)
		if err != nil {
			return nil, fmt.Errorf("%s %w", what, err)
		}
		m = append(m, hp)
	}
	return m, nil
}

func parseHostPattern(s string) (hostPattern, error) {
	p := strings.TrimSpace(s)
	if p == "*" {
		return hostPattern{any: true}, nil
	}
	name, wildcard := strings.CutPrefix(p, "*.")
	name = normalizeHost(name)
	switch {
	case name == "":
		return hostPattern{}, fmt.Errorf("%q is empty", s)
	case strings.Contains(name, "*"):
		return hostPattern{}, fmt.Errorf("%q: only \"*\" or a leading \"*.\" may be a wildcard", s)
	case strings.ContainsAny(name, "/@?# \t") || (strings.Contains(name, ":") && net.ParseIP(name) == nil):
		return hostPattern{}, fmt.Errorf("%q: patterns hold a host name only, no scheme, port or path", s)
	case wildcard:
		return hostPattern{suffix: "." + name}, nil
	}
	return hostPattern{exact: name}, nil
}

// normalizeHost lower-cases a host name and drops IPv6 brackets and a
// trailing dot, so "Example.COM." and "example.com" are one host.
func normalizeHost(h string) string {
	h = strings.ToLower(h)
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	h = strings.TrimSuffix(h, ".")
	// One spelling per host: python requests sends the ASCII (punycode)
	// form of an internationalized name, and an IPv6 literal as written.
	if a, err := netip.ParseAddr(h); err == nil {
		return a.String()
	}
	if isASCII(h) {
		return h // what IDNA would give back, or refuse and leave
	}
	if a, err := idna.Lookup.ToASCII(h); err == nil {
		return a
	}
	return h
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// match reports whether host (a URL's Hostname) is selected.
func (m hostMatcher) match(host string) bool {
	if len(m) == 0 {
		return true
	}
	host = normalizeHost(host)
	for _, p := range m {
		switch {
		case p.any:
			return true
		case p.suffix != "":
			if len(host) > len(p.suffix) && strings.HasSuffix(host, p.suffix) {
				return true
			}
		case host == p.exact:
			return true
		}
	}
	return false
}

// isJSON reports whether a Content-Type value is application/json or a
// +json media type, with or without parameters.
func isJSON(contentType string) bool {
	if contentType == "" {
		return false
	}
	// Only the media type decides: a malformed or repeated parameter
	// does not make a JSON body something else.
	media, _, _ := strings.Cut(contentType, ";")
	mt, _, err := mime.ParseMediaType(media)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// captures reports whether r is a hook to capture. goproxy only hands
// requests in absolute form to its handlers; the check is kept so the rule
// reads whole.
func (p *Proxy) captures(r *http.Request) bool {
	if !r.URL.IsAbs() {
		return false
	}
	methodOK := false
	for _, m := range p.methods {
		if strings.EqualFold(r.Method, m) {
			methodOK = true
			break
		}
	}
	return methodOK && isJSON(r.Header.Get("Content-Type")) && p.hosts.match(r.URL.Hostname())
}

// MaxTargetURL is the longest hook URL captured, in bytes; a longer one
// gets 414 URI Too Long. A target URL is part of the store's keys.
const MaxTargetURL = 8 << 10

// errBodyTooLarge is readBody's answer to a body over the limit.
var errBodyTooLarge = errors.New("body too large")

// readAhead is what readBody allocates for a body with a Content-Length
// before any of it has arrived; it then grows with what arrives.
const readAhead = 64 << 10

// readBody reads a request body of at most limit bytes.
func readBody(body io.Reader, contentLength, limit int64) ([]byte, error) {
	if contentLength > limit {
		return nil, errBodyTooLarge
	}
	if contentLength >= 0 {
		// net/http guarantees a body of exactly Content-Length bytes. The
		// buffer grows as they arrive, fourfold each time it is full (at
		// most four times what arrived, and few copies): made at the
		// announced size, each request head would hold up to the limit
		// in memory for as long as its body takes, or for ever (200 heads
		// announcing 16 MiB made a 3.4 GB heap, the garbage collector
		// running without end).
		b := make([]byte, min(contentLength, readAhead))
		for n := 0; ; {
			m, err := io.ReadFull(body, b[n:])
			n += m
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // the body ended early
			}
			if err != nil {
				return nil, fmt.Errorf("read body: %w", err)
			}
			if int64(n) == contentLength {
				return b, nil
			}
			b = append(b, make([]byte, min(contentLength-int64(n), 3*int64(n)))...)
		}
	}
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if n > limit {
		return nil, errBodyTooLarge
	}
	return buf.Bytes(), nil
}

// unsupportedEncodingError is a Content-Encoding a hook cannot be
// decoded from.
type unsupportedEncodingError string

func (e unsupportedEncodingError) Error() string {
	return fmt.Sprintf("content encoding %q is not supported: send the hook as is, or gzip or deflate", string(e))
}

// readHookBody reads a hook's body and undoes its Content-Encoding
// (gzip or deflate), so the store holds the JSON a batch is made of.
// The limit applies to the decoded body. On success the request's
// Content-Encoding header is gone, as the body is no longer encoded.
// codings are r's (contentCodings).
func (p *Proxy) readHookBody(r *http.Request, codings []string) ([]byte, error) {
	if len(codings) == 0 {
		r.Header.Del("Content-Encoding") // identity, if anything
		return readBody(r.Body, r.ContentLength, p.maxBody)
	}
	if len(codings) > 1 {
		return nil, unsupportedEncodingError(strings.Join(codings, ", "))
	}
	raw := p.maxWire()
	if r.ContentLength > raw {
		return nil, errBodyTooLarge
	}
	wire := &io.LimitedReader{R: r.Body, N: raw + 1}
	var (
		dec io.ReadCloser
		err error
	)
	br := bufio.NewReader(wire)
	switch codings[0] {
	case "gzip", "x-gzip":
		dec, err = gzip.NewReader(br)
	case "deflate":
		// HTTP's deflate is zlib-wrapped (RFC 9110 8.4.1.2); some
		// clients send it raw.
		if head, _ := br.Peek(2); len(head) == 2 && (uint16(head[0])<<8|uint16(head[1]))%31 == 0 && head[0]&0x0f == 8 {
			dec, err = zlib.NewReader(br)
		} else {
			dec = flate.NewReader(br)
		}
	default:
		return nil, unsupportedEncodingError(codings[0])
	}
	if err != nil {
		return nil, fmt.Errorf("decode %s body: %w", codings[0], err)
	}
	defer dec.Close()
	body, err := readBody(dec, -1, p.maxBody)
	if wire.N <= 0 {
		return nil, errBodyTooLarge
	}
	if err != nil {
		return nil, err
	}
	// The decoders read no further than their stream's end: anything
	// after it is not part of the hook, and not to be dropped unseen.
	if _, err := br.ReadByte(); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("data after the end of the %s stream", codings[0])
		}
		return nil, fmt.Errorf("decode %s body: %w", codings[0], err)
	}
	r.Header.Del("Content-Encoding")
	return body, nil
}

// maxWire bounds what is read from the wire of an encoded hook body, a
// little above the limit: incompressible data grows by a few bytes per
// block, and empty gzip members could go on for ever.
func (p *Proxy) maxWire() int64 { return p.maxBody + p.maxBody/16 + 1024 }

// contentCodings lists a request's content codings other than identity,
// lower-cased, in the order they were applied.
func contentCodings(h http.Header) []string {
	var codings []string
	for _, v := range h.Values("Content-Encoding") {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.ToLower(textproto.TrimString(c)); c != "" && c != "identity" {
				codings = append(codings, c)
			}
		}
	}
	return codings
}

// capturingBytes is what capturing r counts against
// Options.MaxCapturingBytes: its Content-Length, or the body limit when
// it has none or is encoded; nothing when its Content-Length alone gets
// it refused (413). An encoded body is refused so only past maxWire: one
// a little over the limit on the wire may decode to a body under it, and
// is read. A coding that is refused unread (415) still counts, and may
// wait for its refusal: python requests sends none. codings are r's
// (contentCodings).
func (p *Proxy) capturingBytes(r *http.Request, codings []string) int64 {
	switch {
	case len(codings) == 0 && r.ContentLength > p.maxBody,
		len(codings) > 0 && r.ContentLength > p.maxWire():
		return 0
	case len(codings) == 0 && r.ContentLength >= 0:
		return r.ContentLength
	}
	return p.maxBody
}

// reserve takes n bytes under Options.MaxCapturingBytes, waiting behind
// the captures that came first until there is room; release gives them
// back. It fails only when ctx ends first.
func (p *Proxy) reserve(ctx context.Context, n int64) (release func(), err error) {
	if p.capturing == nil || n == 0 {
		return func() {}, nil
	}
	if !p.capturing.TryAcquire(n) {
		p.capturingFull()
		if err := p.capturing.Acquire(ctx, n); err != nil {
			return nil, err
		}
	}
	if p.onReserve != nil {
		p.onReserve(n)
	}
	return func() { p.capturing.Release(n) }, nil
}

// capturingFull reports a capture waiting for room under
// Options.MaxCapturingBytes: in the log at most once a minute.
func (p *Proxy) capturingFull() {
	if p.onCaptureWait != nil {
		p.onCaptureWait()
	}
	if onceAMinute(&p.lastCapturingFull) {
		p.log.Warn("hooks being captured at their memory bound: new ones wait until one is stored", "limit", p.maxCapturing)
	}
}

// undeliverableURL says why a hook's URL cannot be a delivery target,
// or returns "". The message never holds the URL itself.
func undeliverableURL(r *http.Request) string {
	switch {
	case r.URL.Scheme != "http" && r.URL.Scheme != "https":
		return "the request URL's scheme is not http or https"
	case r.URL.Hostname() == "":
		return "the request URL has no host"
	case !validPort(r.URL.Port()):
		// Stored, it would fail every delivery attempt and be
		// dead-lettered minutes later, after the app got its 202.
		return "the request URL's port is not a number from 1 to 65535"
	case r.URL.User != nil:
		// Stored, it would be kept at rest and listed with the target.
		return "the request URL holds credentials (user:password@): send them in a header"
	case strings.Contains(r.RequestURI, "#"):
		// A request target has no fragment (RFC 9112 3.2); net/http
		// would keep it in the path and deliver to another one.
		return "the request URL holds a fragment (#)"
	}
	return ""
}

// validPort reports whether a URL's port (empty: the scheme's default)
// can be dialled.
func validPort(port string) bool {
	if port == "" {
		return true
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}

// capture stores r as a hook and builds the answer to the app. When the
// store is unavailable and the fallback is forward, it returns r, rebuilt
// from the body already read, for goproxy to send upstream.
func (p *Proxy) capture(r *http.Request, start time.Time) (*http.Request, *http.Response) {
	host := r.URL.Host
	codings := contentCodings(r.Header)
	release, err := p.reserve(r.Context(), p.capturingBytes(r, codings))
	if err != nil {
		p.log.Warn("hook abandoned: client went away", "target", host, "duration", time.Since(start), "error", err)
		p.refused(RefusedClientGone)
		return nil, jsonErrorResponse(r, http.StatusServiceUnavailable, "request cancelled")
	}
	// A hook forwarded because the store failed counts no more once it
	// is handed on: the forward waits on its receiver for up to the send
	// timeout, and captures must not wait on a receiver.
	defer release()
	body, err := p.readHookBody(r, codings)
	var unsupported unsupportedEncodingError
	switch {
	case errors.Is(err, errBodyTooLarge):
		p.log.Warn("hook refused: body too large", "target", host, "status", http.StatusRequestEntityTooLarge, "limit", p.maxBody)
		p.refused(RefusedTooLarge)
		return nil, jsonErrorResponse(r, http.StatusRequestEntityTooLarge,
			fmt.Sprintf("request body exceeds the %d-byte limit", p.maxBody))
	case errors.As(err, &unsupported):
		p.log.Warn("hook refused: unsupported content encoding", "target", host, "status", http.StatusUnsupportedMediaType, "encoding", string(unsupported))
		p.refused(RefusedEncoding)
		resp := jsonErrorResponse(r, http.StatusUnsupportedMediaType, err.Error())
		resp.Header.Set("Accept-Encoding", "gzip, deflate")
		return nil, resp
	case err != nil:
		p.log.Warn("hook refused: cannot read body", "target", host, "status", http.StatusBadRequest, "error", err)
		p.refused(RefusedBadRequest)
		// The body's framing may be broken: what follows it is no
		// request to read.
		return nil, closing(jsonErrorResponse(r, http.StatusBadRequest, "cannot read request body: "+err.Error()))
	}
	if msg := undeliverableURL(r); msg != "" {
		// Not the URL itself: it may hold credentials or a token.
		p.log.Warn("hook refused: "+msg, "target", host, "status", http.StatusBadRequest)
		p.refused(RefusedBadRequest)
		return nil, jsonErrorResponse(r, http.StatusBadRequest, msg)
	}
	if n := len(r.URL.String()); n > MaxTargetURL {
		p.log.Warn("hook refused: URL too long", "target", host, "status", http.StatusRequestURITooLong, "bytes", n)
		p.refused(RefusedURLTooLong)
		return nil, jsonErrorResponse(r, http.StatusRequestURITooLong,
			fmt.Sprintf("the hook's URL is %d bytes, over the %d-byte limit", n, MaxTargetURL))
	}
	// A body that is not UTF-8 passes (json.Valid lets any byte through
	// inside a string): batches carry it re-encoded from ISO-8859-1.
	if p.requireJSON && !json.Valid(body) {
		p.log.Warn("hook refused: body is not valid JSON", "target", host, "status", http.StatusBadRequest)
		p.refused(RefusedInvalidJSON)
		return nil, jsonErrorResponse(r, http.StatusBadRequest, "request body is not valid JSON")
	}

	h := &buffer.Hook{Target: r.URL.String(), Method: r.Method, Header: hookHeader(r.Header), Body: body}
	err = p.store.Put(r.Context(), h)
	d := time.Since(start)
	if err == nil {
		p.log.Info("hook captured", "hook_id", h.ID, "target", host, "duration", d)
		if p.onCapture != nil {
			p.onCapture(h, d)
		}
		return nil, acceptedResponse(r, h.ID)
	}

	switch {
	case errors.Is(err, buffer.ErrQuota):
		p.log.Warn("hook refused: pending quota exhausted", "target", host, "status", http.StatusInsufficientStorage, "error", err)
		p.refused(RefusedPendingFull)
		return nil, jsonErrorResponse(r, http.StatusInsufficientStorage, "hook buffer is full: "+err.Error())
	case r.Context().Err() != nil:
		// The app hung up before the hook was stored: nobody is left to
		// answer, and forwarding now would deliver a hook the app may
		// send again.
		p.log.Warn("hook abandoned: client went away", "target", host, "duration", d, "error", err)
		p.refused(RefusedClientGone)
		return nil, jsonErrorResponse(r, http.StatusServiceUnavailable, "request cancelled")
	case p.reject:
		p.log.Error("hook refused: store unavailable", "target", host, "status", http.StatusServiceUnavailable, "error", err)
		p.refused(RefusedStoreError)
		resp := jsonErrorResponse(r, http.StatusServiceUnavailable, "hook buffer unavailable: "+err.Error())
		resp.Header.Set("Retry-After", "5")
		return nil, resp
	}
	p.log.Error("store unavailable: forwarding hook directly", "target", host, "error", err)
	if p.onForward != nil {
		p.onForward()
	}
	r.Header = h.Header
	if r.Header == nil {
		r.Header = make(http.Header)
	}
	r.TransferEncoding = nil
	r.ContentLength = int64(len(body))
	r.Body = io.NopCloser(bytes.NewReader(body))
	// Lets the transport retry on a stale pooled connection.
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return r.WithContext(context.WithValue(r.Context(), forwardedKey{}, true)), nil
}

// Reasons a hook is answered without being kept (Options.OnRefuse).
const (
	// RefusedTooLarge: the body is over MaxBodyBytes (413).
	RefusedTooLarge = "too-large"
	// RefusedURLTooLong: the URL is over MaxTargetURL (414).
	RefusedURLTooLong = "url-too-long"
	// RefusedEncoding: a Content-Encoding hookproxy cannot decode (415).
	RefusedEncoding = "unsupported-encoding"
	// RefusedBadRequest: a body that cannot be read or framed, or a URL
	// no hook can be delivered to (400, 411).
	RefusedBadRequest = "bad-request"
	// RefusedInvalidJSON: a body that is not JSON, with RequireValidJSON
	// (400).
	RefusedInvalidJSON = "invalid-json"
	// RefusedPendingFull: the store's pending-bytes quota is full (507).
	RefusedPendingFull = "pending-full"
	// RefusedStoreError: the store failed, with OnStoreErrorReject (503).
	RefusedStoreError = "store-error"
	// RefusedClientGone: the app hung up before the hook was kept.
	RefusedClientGone = "client-gone"
)

// RefusalReasons lists every reason OnRefuse is called with.
var RefusalReasons = []string{RefusedTooLarge, RefusedURLTooLong, RefusedEncoding, RefusedBadRequest,
	RefusedInvalidJSON, RefusedPendingFull, RefusedStoreError, RefusedClientGone}

// refused reports a hook answered without being kept.
func (p *Proxy) refused(reason string) {
	if p.onRefuse != nil {
		p.onRefuse(reason)
	}
}

// acceptedResponse is the answer to a captured hook.
func acceptedResponse(req *http.Request, id string) *http.Response {
	b, _ := json.Marshal(struct {
		HookID string `json:"hook_id"`
		Status string `json:"status"`
	}{id, "accepted"})
	resp := jsonResponse(req, http.StatusAccepted, b)
	resp.Header.Set(HookIDHeader, id)
	return resp
}

// jsonErrorResponse is an error answer with body {"error": msg}.
func jsonErrorResponse(req *http.Request, status int, msg string) *http.Response {
	return jsonResponse(req, status, errorBody(msg))
}

func errorBody(msg string) []byte {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	return b
}

func jsonResponse(req *http.Request, status int, body []byte) *http.Response {
	return &http.Response{
		Status:     strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode: status,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header: http.Header{
			"Content-Type":   {"application/json"},
			"Content-Length": {strconv.Itoa(len(body))},
		},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// closing makes resp end the app's connection: it says Connection: close,
// which net/http and goproxy's tunnel both act on.
func closing(resp *http.Response) *http.Response {
	resp.Close = true
	resp.Header.Set("Connection", "close")
	return resp
}

// writeJSONError writes an error answer with body {"error": msg}.
func writeJSONError(w http.ResponseWriter, status int, msg string) {
	b := errorBody(msg)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
