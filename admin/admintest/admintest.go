// Package admintest helps tests talk to hookproxy's admin listener: a
// request with an optional bearer token and a JSON answer, a scrape of
// /metrics parsed with Prometheus' own parser, and the value of one
// series; and it runs an impostor, a server that answers like the admin
// API without being it.
package admintest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// send sends req, with token as a bearer token when not empty; a request
// that gets no answer fails the test.
func send(tb testing.TB, req *http.Request, token string) *http.Response {
	tb.Helper()
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	return resp
}

// Call sends a request with an optional token and JSON body (nil: none),
// decodes a JSON answer into out (when not nil) and returns the status.
func Call(tb testing.TB, method, url, token string, body, out any) int {
	tb.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			tb.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		tb.Fatal(err)
	}
	resp := send(tb, req, token)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			tb.Fatalf("%s %s: %d %s: %v", method, url, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

// Scrape GETs adminURL/metrics (with token as a bearer token, when not
// empty) in the text format and parses it into metric families.
func Scrape(tb testing.TB, adminURL, token string) map[string]*dto.MetricFamily {
	tb.Helper()
	req, err := http.NewRequest("GET", adminURL+"/metrics", nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain") // the text format, not protobuf
	resp := send(tb, req, token)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("/metrics: %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		tb.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// Series returns the value of the series of family name whose labels are
// exactly labels ("k=v" pairs, in order); for a histogram, its sample
// count and sum (sum is 0 for the other types). A missing family or
// series fails the test.
func Series(tb testing.TB, fams map[string]*dto.MetricFamily, name string, labels ...string) (value, sum float64) {
	tb.Helper()
	f := fams[name]
	if f == nil {
		tb.Fatalf("no metric family %s", name)
	}
	want := strings.Join(labels, ",")
	for _, m := range f.GetMetric() {
		var got []string
		for _, l := range m.GetLabel() {
			got = append(got, l.GetName()+"="+l.GetValue())
		}
		if strings.Join(got, ",") != want {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), 0
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), 0
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount()), m.GetHistogram().GetSampleSum()
		}
	}
	tb.Fatalf("no series %s{%s}", name, want)
	return 0, 0
}

// impostorAnswers are JSON answers of the shapes the admin API gives on
// its routes: nothing pending, nothing dead, alive and ready.
var impostorAnswers = map[string]string{
	"GET /healthz":                      `{"status":"alive"}`,
	"GET /readyz":                       `{"ready":true}`,
	"GET /api/status":                   `{"version":"v1.0.0","ready":true}`,
	"GET /api/targets":                  `{"targets":[],"total":0,"offset":0,"limit":50}`,
	"GET /api/targets/{id}":             `{"id":1,"url":"http://a.test/"}`,
	"POST /api/targets/{id}/clear-gone": `{"id":1,"url":"http://a.test/"}`,
	"GET /api/dead-letters":             `{"dead_letters":[],"total":0,"offset":0,"limit":100}`,
	"GET /api/dead-letters/{id}":        `{"id":"01JBX","target_id":1,"target":"http://a.test/","hooks":[]}`,
	"POST /api/dead-letters/replay":     `{"dead_letters":0,"hooks":0,"ids":[]}`,
	"DELETE /api/dead-letters":          `{"dead_letters":0,"ids":[]}`,
}

// Impostor runs a JSON server on a loopback listener until the test ends
// and returns its URL. It is not hookproxy's admin API, and answers every
// request with status and body; an empty body means the JSON the admin
// API would give on that route (an empty list, alive, ready), so that
// nothing but the admin API's mark tells the two apart.
func Impostor(tb testing.TB, status int, body string) string {
	tb.Helper()
	answer := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, body)
		}
	}
	mux := http.NewServeMux()
	if body != "" {
		mux.Handle("/", answer(body))
	} else {
		mux.Handle("/", answer(`{}`))
		for route, shaped := range impostorAnswers {
			mux.Handle(route, answer(shaped))
		}
	}
	srv := httptest.NewServer(mux)
	tb.Cleanup(srv.Close)
	return srv.URL
}
