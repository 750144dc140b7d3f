package buffer

import (
	"errors"
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestHookRecordRoundTrip(t *testing.T) {
	tests := []Hook{
		{ID: "01", Target: "http://a.test/x?y=1", Method: "POST", Body: []byte(`{"a":1}`), Received: time.Unix(1, 2)},
		{ID: "02", Target: "https://b.test/", Method: "PUT", Header: http.Header{"Content-Type": {"application/json"}, "X-Multi": {"a", "b"}}, Body: []byte{}, Received: time.Unix(0, 0)},
	}
	for _, h := range tests {
		got, err := decodeHook(encodeHook(&h))
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Body) == 0 {
			h.Body = nil
			if len(got.Body) == 0 {
				got.Body = nil
			}
		}
		if !got.Received.Equal(h.Received) {
			t.Errorf("received = %v, want %v", got.Received, h.Received)
		}
		got.Received, h.Received = time.Time{}, time.Time{}
		if !reflect.DeepEqual(got, h) {
			t.Errorf("round trip = %+v, want %+v", got, h)
		}
	}
}

func TestHookRecordCorrupt(t *testing.T) {
	rec := encodeHook(&Hook{ID: "x", Target: "http://a.test/", Header: http.Header{"A": {"b"}}, Body: []byte("{}")})
	for _, b := range [][]byte{nil, {9}, rec[:len(rec)/2], rec[:3]} {
		if _, err := decodeHook(b); !errors.Is(err, errCorrupt) {
			t.Errorf("decode %x: err = %v, want errCorrupt", b, err)
		}
	}
}

func TestIDsSortByTimeThenSequence(t *testing.T) {
	t0 := time.UnixMilli(1700000000000)
	ids := []string{
		newID(t0, 7, 1),
		newID(t0, 7, 2),
		newID(t0.Add(time.Millisecond), 7, 0),
		newID(t0.Add(time.Hour), 1, 0),
	}
	if !slices.IsSorted(ids) {
		t.Fatalf("ids not sorted: %v", ids)
	}
	if newID(t0, 1, 5) == newID(t0, 2, 5) {
		t.Fatal("two stores made the same id")
	}
}

// TestRecordLen: recordLen is the exact length of a hook's record, which
// the group commit sizes its transactions by (a record under the value
// threshold is stored in the transaction itself).
func TestRecordLen(t *testing.T) {
	long := make([]byte, 300)
	for _, h := range []Hook{
		{ID: "01", Target: "http://a.test/x?y=1", Method: "POST", Body: []byte(`{"a":1}`), Received: time.Unix(1, 2)},
		{Target: "https://b.test/", Method: "PUT", Body: long, Received: time.Now(),
			Header: http.Header{"Content-Type": {"application/json"}, "X-Multi": {"a", "b"}, "Authorization": {string(long)}}},
		{ID: "03", Target: "http://c.test/", Method: "POST", Received: time.Unix(-5, 0)},
		atThreshold(),
	} {
		want := recordLen(&h)
		if h.ID == "" {
			h.ID = newID(h.Received, 1, 1) // assigned at commit, after the sizing
		}
		if got := len(encodeHook(&h)); got != want {
			t.Errorf("hook %s: recordLen %d, record %d bytes", h.ID, want, got)
		}
		inline := len(encodeHook(&h)) < valueThreshold
		if c := inlineCost(&h); inline && c < int64(len(encodeHook(&h))) {
			t.Errorf("hook %s: inline record of %d bytes costed %d", h.ID, len(encodeHook(&h)), c)
		}
	}
}

// atThreshold is a hook whose record is one byte short of the value
// threshold: the largest stored in the transaction itself.
func atThreshold() Hook {
	h := Hook{ID: "04", Target: "http://c.test/", Method: "POST", Received: time.Unix(1e9, 0),
		Header: http.Header{"X-A": {"1"}, "X-B": {"2"}, "X-C": {"3"}}, Body: make([]byte, valueThreshold-200)}
	h.Body = make([]byte, len(h.Body)+valueThreshold-1-len(encodeHook(&h)))
	return h
}
