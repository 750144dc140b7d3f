package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"hookproxy/buffer"
)

// minBodySize is the smallest body hookBody makes: the JSON around the
// padding.
const minBodySize = 200

// hookBody is a django-rest-hooks-like JSON body of exactly size bytes
// (at least minBodySize) holding hookMarker once. pyclient.py builds the
// very same bytes.
func hookBody(size int, target string) []byte { return seededHookBody(size, target, 1) }

// seededHookBody is hookBody with a padding that depends on seed (1 gives
// hookBody's): bodies that differ, so that a store of many does not
// compress them into one.
func seededHookBody(size int, target string, seed uint32) []byte {
	head := fmt.Sprintf(`{"hook": {"id": 1, "event": "book.added", "target": %q}, `+
		`%s: 1, "data": {"model": "books.book", "pk": 21, "fields": {"title": "Dune", "pad": "`, target, hookMarker)
	const tail = `"}}}`
	return []byte(head + padding(size-len(head)-len(tail), seed) + tail)
}

// padding is n pseudo-random letters and digits from seed, the same on
// every call and, for seed 1, in pyclient.py: unlike a run of one letter,
// it does not compress to nothing, so the disk figures stay honest.
func padding(n int, seed uint32) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, max(n, 0))
	x := seed
	for i := range b {
		x = (x*1103515245 + 12345) & 0x7fffffff
		b[i] = alphabet[(x>>16)%uint32(len(alphabet))]
	}
	return string(b)
}

// httpSystem sends requests with one http.Client per worker, through a
// proxy or straight to the receiver, keeping connections alive.
type httpSystem struct {
	proxy       *url.URL // nil: no proxy
	method      string
	url         func(i int64) string
	contentType string // "" for none
	body        []byte // nil for none
	// bodyFor, when set, makes the body of request i instead.
	bodyFor func(i int64) []byte
	want    int    // expected status
	onOK    func() // called after each expected answer; may be nil

	mu      sync.Mutex
	clients []*http.Client
}

func (s *httpSystem) worker(int) (op, error) {
	tr := &http.Transport{
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	if s.proxy != nil {
		tr.Proxy = http.ProxyURL(s.proxy)
	}
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	s.mu.Lock()
	s.clients = append(s.clients, c)
	s.mu.Unlock()
	return func(ctx context.Context, i int64) error { return s.do(ctx, c, i) }, nil
}

func (s *httpSystem) do(ctx context.Context, c *http.Client, i int64) error {
	var body io.Reader
	switch {
	case s.bodyFor != nil:
		body = bytes.NewReader(s.bodyFor(i))
	case s.body != nil:
		body = bytes.NewReader(s.body)
	}
	req, err := http.NewRequestWithContext(ctx, s.method, s.url(i), body)
	if err != nil {
		return fmt.Errorf("new request: %w", err)
	}
	if s.contentType != "" {
		req.Header.Set("Content-Type", s.contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != s.want {
		return fmt.Errorf("%s %s: %d, want %d: %w", s.method, req.URL.Path, resp.StatusCode, s.want, errStatus)
	}
	if s.onOK != nil {
		s.onOK()
	}
	return nil
}

func (s *httpSystem) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.clients {
		c.CloseIdleConnections()
	}
	s.clients = nil
}

// fixedURL is a url func that always returns u.
func fixedURL(u string) func(int64) string { return func(int64) string { return u } }

// putSystem calls the buffer's Put directly: one synced, group-committed
// write per hook, without HTTP.
type putSystem struct {
	store  *buffer.Store
	target string
	body   []byte
	header http.Header
}

func (s *putSystem) worker(int) (op, error) {
	return func(ctx context.Context, _ int64) error {
		h := &buffer.Hook{Target: s.target, Method: http.MethodPost, Header: s.header, Body: s.body}
		if err := s.store.Put(ctx, h); err != nil {
			return fmt.Errorf("put: %w", err)
		}
		return nil
	}, nil
}

func (s *putSystem) close() {}

// openPutSystem opens a buffer store in dir for a putSystem.
func openPutSystem(dir, target string, body []byte) (*putSystem, error) {
	st, err := buffer.Open(buffer.Options{Dir: dir})
	if err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", dir, err)
	}
	return &putSystem{
		store:  st,
		target: target,
		body:   body,
		header: http.Header{"Content-Type": {"application/json"}, "User-Agent": {"python-requests/2.28.1"}},
	}, nil
}
