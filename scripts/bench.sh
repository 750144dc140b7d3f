#!/usr/bin/env bash
# Runs hookproxy's whole benchmark suite on a fresh machine, in one
# command: installs what the references need (Debian's redis-server and
# python3-requests) when missing, then runs the benchmark program, which
# builds hookproxy, measures it against its references on 127.0.0.1 only,
# and writes BENCHMARKS.md and docs/bench-latency.png.
#
# usage: bash scripts/bench.sh [--short] [more flags for go run ./bench]
#
# --short runs every scenario with tiny counts (well under a minute): it
# checks that the suite works; its figures mean nothing. Any other
# argument is passed on (see go run ./bench -h), e.g. -reps 5.
set -euo pipefail
cd "$(dirname "$0")/.."

short=()
args=()
for a in "$@"; do
	case "$a" in
	--short | -short) short=(-short) ;;
	*) args+=("$a") ;;
	esac
done

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	sudo=(sudo)
fi
need=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need+=(redis-server)
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import requests' 2>/dev/null || need+=(python3-requests)
if ((${#need[@]})); then
	echo "bench.sh: installing ${need[*]}"
	"${sudo[@]}" apt-get update -qq
	# The benchmark starts its own redis-server on a free loopback port;
	# the package's own service, if the system starts one, is not used.
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

command -v go >/dev/null 2>&1 || {
	echo "bench.sh: go is not on PATH" >&2
	exit 1
}

mkdir -p docs
via="bash scripts/bench.sh"
if ((${#short[@]})); then
	via+=" --short"
fi
exec go run ./bench "${short[@]}" -out BENCHMARKS.md -png docs/bench-latency.png -via "$via" "${args[@]}"
