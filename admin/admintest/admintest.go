// Package admintest helps tests talk to hookproxy's admin listener: a
// request with an optional bearer token and a JSON answer, a scrape of
// /metrics parsed with Prometheus' own parser, and the value of one
// series.
package admintest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
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
