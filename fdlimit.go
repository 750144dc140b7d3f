package main

import "math"

// lowFileLimit is the open-file limit below which hookproxy warns at
// start: a quarter of it is few connections for an app with many
// workers, and a large store holds hundreds of files.
const lowFileLimit = 4096

// maxConns is the bound on app connections served at once for an
// open-file limit of files descriptors: a quarter of them. A connection
// holds one descriptor, two while it relays a tunnel or passes a
// request on, which leaves half of them to the store and the
// deliveries. Badger must find one free whenever it opens a file (a
// write-ahead log every 8 MiB of writes, tables, value logs): when it
// does not, it crashes the process. 0, no bound, when the limit is
// unknown (0) or too large to matter.
func maxConns(files uint64) int {
	if files == 0 || files/4 > math.MaxInt32 {
		return 0
	}
	return max(int(files/4), 1)
}
