package main

import (
	"math"
	"testing"
)

func TestMaxConns(t *testing.T) {
	for _, tc := range []struct {
		files uint64
		want  int
	}{
		{0, 0},      // unknown: no bound
		{1, 1},      // never none
		{64, 16},    // a quarter
		{1024, 256}, //
		{1 << 20, 1 << 18},
		{math.MaxUint64, 0}, // RLIM_INFINITY
	} {
		if got := maxConns(tc.files); got != tc.want {
			t.Errorf("maxConns(%d) = %d, want %d", tc.files, got, tc.want)
		}
	}
}
