package main

import (
	"runtime/debug"
	"strings"
)

// minMemoryLimit is the smallest HOOKPROXY_MEMORY_LIMIT accepted: below
// it the garbage collector would run all the time and still not meet it.
const minMemoryLimit ByteSize = 32 << 20

// applyMemoryLimit sets the Go runtime's soft memory limit from
// HOOKPROXY_MEMORY_LIMIT and says where the limit in force comes from.
//
// Without a limit, the heap of a store under bulk ingest grows to several
// times its live size before a collection (most of it is Badger's
// compaction buffers, which no option bounds); with one, the collector
// runs earlier instead. It is soft: a live heap above it is not an error,
// the collector just works harder (at most about half the CPU).
// GOMEMLIMIT, when set, was applied by the runtime at start and wins, so
// the operator's usual knob keeps working; 0 leaves the runtime alone.
func applyMemoryLimit(cfg Config, environ []string) (limit int64, source string) {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "GOMEMLIMIT="); ok && v != "" {
			return debug.SetMemoryLimit(-1), "GOMEMLIMIT"
		}
	}
	if cfg.MemoryLimit == 0 {
		return debug.SetMemoryLimit(-1), "none"
	}
	debug.SetMemoryLimit(int64(cfg.MemoryLimit))
	return int64(cfg.MemoryLimit), envPrefix + "MEMORY_LIMIT"
}
