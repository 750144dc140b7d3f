package sender

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"hookproxy/buffer"
)

// Forwarder wraps rt, the transport of the hooks the proxy forwards
// because the store could not keep them, so that each goes out as a
// delivery of a hook sent alone would: with a fresh id in
// Idempotency-Key and, with signing secrets, signed with that id. The
// rest of the request is the app's.
func (s *Sender) Forwarder(rt http.RoundTripper) http.RoundTripper {
	return forwarder{s: s, rt: rt}
}

type forwarder struct {
	s  *Sender
	rt http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (f forwarder) RoundTrip(req *http.Request) (*http.Response, error) {
	now := f.s.clock.Now()
	id := buffer.NewRandomID(now)
	out := req.Clone(req.Context()) // a RoundTripper must not change req
	if out.Header == nil {
		out.Header = make(http.Header)
	}
	out.Header.Set("Idempotency-Key", id)
	if f.s.signer != nil {
		body, err := forwardedBody(req)
		if err != nil {
			if req.Body != nil {
				_ = req.Body.Close() // as a RoundTripper must, also on error
			}
			return nil, err
		}
		f.s.signer.sign(out.Header, id, now, body)
	}
	return f.rt.RoundTrip(out)
}

// forwardedBody reads a copy of req's body through GetBody, which the
// proxy sets on a forwarded hook (its body is in memory).
func forwardedBody(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	if req.GetBody == nil {
		return nil, errors.New("sign forwarded hook: its body cannot be read twice")
	}
	rc, err := req.GetBody()
	if err != nil {
		return nil, fmt.Errorf("sign forwarded hook: %w", err)
	}
	defer rc.Close()
	return io.ReadAll(rc)
}
