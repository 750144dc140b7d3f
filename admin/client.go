package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Client talks to the admin API, for the command line.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
}

// NewClient returns a client of the admin API at baseURL (such as
// http://127.0.0.1:9090) that sends token as a bearer token when it is
// not empty. A nil hc means a client of its own that never uses the
// process's proxy settings: they point at hookproxy's proxy port.
func NewClient(baseURL, token string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("admin url %q: want http://host:port", RedactedURL(baseURL))
	}
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{Proxy: nil}}
	}
	return &Client{base: u, token: token, http: hc}, nil
}

// RedactedURL is rawURL with the password of its user:password@, if
// any, replaced by "xxxxx", as Go's HTTP client writes a URL in its
// errors; also when rawURL is no URL (a port that is not a number, no
// scheme), which is when an error shows it.
func RedactedURL(rawURL string) string {
	_, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		rest = rawURL
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return rawURL
	}
	user, _, hasPassword := strings.Cut(authority[:at], ":")
	if !hasPassword {
		return rawURL
	}
	start := len(rawURL) - len(rest)
	return rawURL[:start] + user + ":xxxxx" + rawURL[start+at:]
}

// APIError is an error answer of the admin API, or any answer of a
// server that is not hookproxy's admin API.
type APIError struct {
	// Status is the answer's HTTP status.
	Status int
	// Message is the admin API's reason. It is empty only for an answer
	// without the MarkHeader, which did not come from hookproxy's admin
	// API (even with a 2xx status): another server, or the proxy port.
	Message string
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("not hookproxy's admin API: answer %d %s without the %s header",
			e.Status, http.StatusText(e.Status), MarkHeader)
	}
	return "admin API: " + e.Message
}

// IsNotFound reports whether err is a 404 answer of the admin API for
// what was asked for (a dead letter, a target): not the 404 of a path
// that is no route, which an admin URL with a wrong path gets for every
// request.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound && ae.Message != "" &&
		!strings.HasPrefix(ae.Message, noRoute)
}

// IsNotAdminAPI reports whether err is an answer from a server that is
// not hookproxy's admin API.
func IsNotAdminAPI(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Message == ""
}

// do sends a request and decodes a 2xx answer of the admin API into out;
// any other answer, and any answer without the MarkHeader, becomes an
// *APIError.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any) error {
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.Header.Get(MarkHeader) == "" {
		// Its body is not read: whatever it says, it is not the admin API's.
		return &APIError{Status: resp.StatusCode}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 && !(path == "/readyz" && resp.StatusCode == http.StatusServiceUnavailable) {
		var eb ErrorBody
		_ = json.Unmarshal(b, &eb)
		if eb.Message == "" {
			// The admin API always says why; an answer cut short may not.
			// An empty Message would make it another server's.
			eb.Message = fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
		}
		return &APIError{Status: resp.StatusCode, Message: eb.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// Alive checks /healthz: nil when the process answers.
func (c *Client) Alive(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil, nil)
}

// Ready returns the readiness (a 503 is an answer, not an error).
func (c *Client) Ready(ctx context.Context) (Readiness, error) {
	var rd Readiness
	return rd, c.do(ctx, http.MethodGet, "/readyz", nil, nil, &rd)
}

// Status returns the totals.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	return st, c.do(ctx, http.MethodGet, "/api/status", nil, nil, &st)
}

// TargetQuery selects a page of targets. The zero value is the first page
// of DefaultLimit targets with the most pending first.
type TargetQuery struct {
	// Sort is "pending" (the default), "age" or "id".
	Sort string
	// Order is "asc" or "desc"; empty: the sort's natural order.
	Order  string
	Limit  int
	Offset int
}

// Targets returns a page of targets.
func (c *Client) Targets(ctx context.Context, tq TargetQuery) (TargetList, error) {
	q := url.Values{}
	if tq.Sort != "" {
		q.Set("sort", tq.Sort)
	}
	if tq.Order != "" {
		q.Set("order", tq.Order)
	}
	setPaging(q, tq.Limit, tq.Offset)
	var tl TargetList
	return tl, c.do(ctx, http.MethodGet, "/api/targets", q, nil, &tl)
}

// Target returns one target.
func (c *Client) Target(ctx context.Context, id uint64) (Target, error) {
	var t Target
	return t, c.do(ctx, http.MethodGet, "/api/targets/"+strconv.FormatUint(id, 10), nil, nil, &t)
}

// ClearGone clears a target's gone mark and returns the target.
func (c *Client) ClearGone(ctx context.Context, id uint64) (Target, error) {
	var t Target
	return t, c.do(ctx, http.MethodPost, "/api/targets/"+strconv.FormatUint(id, 10)+"/clear-gone", nil, nil, &t)
}

// DeadLetterQuery selects a page of dead letters. The zero value is the
// first page of all of them, oldest first.
type DeadLetterQuery struct {
	Target   string
	TargetID uint64
	Reason   string
	Limit    int
	Offset   int
}

// DeadLetters returns a page of dead letters.
func (c *Client) DeadLetters(ctx context.Context, dq DeadLetterQuery) (DeadLetterList, error) {
	q := url.Values{}
	if dq.Target != "" {
		q.Set("target", dq.Target)
	}
	if dq.TargetID != 0 {
		q.Set("target_id", strconv.FormatUint(dq.TargetID, 10))
	}
	if dq.Reason != "" {
		q.Set("reason", dq.Reason)
	}
	setPaging(q, dq.Limit, dq.Offset)
	var dl DeadLetterList
	return dl, c.do(ctx, http.MethodGet, "/api/dead-letters", q, nil, &dl)
}

// DeadLetter returns one dead letter with its hooks.
func (c *Client) DeadLetter(ctx context.Context, id string) (DeadLetterDetail, error) {
	var d DeadLetterDetail
	return d, c.do(ctx, http.MethodGet, "/api/dead-letters/"+url.PathEscape(id), nil, nil, &d)
}

// Replay puts the selected dead letters back in their targets' queues.
func (c *Client) Replay(ctx context.Context, sel Selector) (ReplayResult, error) {
	if err := sel.Validate(); err != nil {
		return ReplayResult{}, err
	}
	var res ReplayResult
	return res, c.do(ctx, http.MethodPost, "/api/dead-letters/replay", nil, sel, &res)
}

// Purge deletes the selected dead letters.
func (c *Client) Purge(ctx context.Context, sel Selector) (PurgeResult, error) {
	if err := sel.Validate(); err != nil {
		return PurgeResult{}, err
	}
	var res PurgeResult
	return res, c.do(ctx, http.MethodDelete, "/api/dead-letters", sel.Query(), nil, &res)
}

func setPaging(q url.Values, limit, offset int) {
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if offset > 0 {
		q.Set("offset", strconv.Itoa(offset))
	}
}

// Close closes the client's idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }
