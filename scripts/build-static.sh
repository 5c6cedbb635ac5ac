#!/usr/bin/env sh
# Builds the static dispenser binary exactly as the Dockerfile does.
# Usage: scripts/build-static.sh [OUTPUT] (default: ./dispenser); VERSION
# defaults to `git describe`.
set -eu
cd "$(dirname "$0")/.."
out="${1:-dispenser}"
version="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${version}" -o "$out" ./cmd/dispenser
echo "$out"
