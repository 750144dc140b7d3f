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
