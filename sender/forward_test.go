package sender

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestForwarderSignsForwardedHooks: a hook the proxy forwards because
// the store failed reaches the receiver as a delivery of one hook would:
// with an Idempotency-Key and, with a signing secret, a signature a
// receiver following the specification accepts. The app's request and
// headers are otherwise untouched, and each forward gets its own id.
func TestForwarderSignsForwardedHooks(t *testing.T) {
	rc := newReceiver(t, nil)
	for _, signed := range []bool{true, false} {
		opts := Options{}
		if signed {
			opts.SigningSecrets = []string{specSecret}
		}
		h := newHarness(t, newFakeClock(time.Unix(1_800_000_000, 0)), nil, opts)
		fwd := h.snd.Forwarder(http.DefaultTransport)

		var ids []string
		for _, body := range []string{`{"n":1}`, `{"n":2}`} {
			req, err := http.NewRequest(http.MethodPost, rc.URL+"/hooks", bytes.NewReader([]byte(body)))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-App", "kept")
			resp, err := fwd.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if req.Header.Get("Idempotency-Key") != "" || req.Header.Get("Webhook-Signature") != "" {
				t.Errorf("the app's request was changed: %v", req.Header)
			}

			got := recv(t, rc.arrived, "the forwarded hook")
			id := got.header.Get("Idempotency-Key")
			if len(id) != 26 {
				t.Errorf("Idempotency-Key %q, want a 26-character id", id)
			}
			ids = append(ids, id)
			if got.body != body || got.header.Get("X-App") != "kept" || got.path != "/hooks" {
				t.Errorf("receiver got %s %q %v, want the app's request", got.path, got.body, got.header)
			}
			err = verifyStandardWebhook(specSecret, got.header, []byte(got.body))
			switch {
			case signed && err != nil:
				t.Errorf("signature: %v", err)
			case signed && got.header.Get("Webhook-Id") != id:
				t.Errorf("webhook-id %q, want the Idempotency-Key %q", got.header.Get("Webhook-Id"), id)
			case !signed && got.header.Get("Webhook-Signature") != "":
				t.Errorf("signed without a secret: %v", got.header)
			}
		}
		if ids[0] == ids[1] {
			t.Errorf("two forwards share the id %s", ids[0])
		}
	}
}

// TestForwarderNeedsARereadableBody: without GetBody the body cannot be
// both signed and sent, and the forward fails instead of going unsigned.
func TestForwarderNeedsARereadableBody(t *testing.T) {
	rc := newReceiver(t, nil)
	h := newHarness(t, newFakeClock(time.Unix(1_800_000_000, 0)), nil, Options{SigningSecrets: []string{specSecret}})
	req, err := http.NewRequest(http.MethodPost, rc.URL, io.NopCloser(strings.NewReader(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.snd.Forwarder(http.DefaultTransport).RoundTrip(req); err == nil || !strings.Contains(err.Error(), "read twice") {
		t.Fatalf("RoundTrip error %v, want one saying the body cannot be read twice", err)
	}
	if n := len(rc.got()); n != 0 {
		t.Errorf("receiver got %d requests, want none", n)
	}
}

// TestForwarderSignsAtTheSendTime: the signature of a forwarded hook
// carries the time it is sent, as a delivery's does: a receiver following
// the specification refuses a timestamp more than a few minutes off.
func TestForwarderSignsAtTheSendTime(t *testing.T) {
	rc := newReceiver(t, nil)
	clk := newFakeClock(time.Unix(1_800_000_000, 0))
	h := newHarness(t, clk, nil, Options{SigningSecrets: []string{specSecret}})
	req, err := http.NewRequest(http.MethodPost, rc.URL+"/hooks", bytes.NewReader([]byte(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h.snd.Forwarder(http.DefaultTransport).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	got := recv(t, rc.arrived, "the forwarded hook")
	if ts, want := got.header.Get("Webhook-Timestamp"), strconv.FormatInt(clk.Now().Unix(), 10); ts != want {
		t.Errorf("webhook-timestamp %q, want the send time %s", ts, want)
	}
}
