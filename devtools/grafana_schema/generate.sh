#!/usr/bin/env bash
# Regenerates dashboard-<grafana version>.schema.json from the npm packages
# pinned in package-lock.json (needs Node >= 18 and npm). See README.md.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
node generate.mjs
# The unit ids Grafana's unit picker offers, from @grafana/data of the same version (for fieldConfig units).
version="$(node -p "require('./package.json').devDependencies['@grafana/schema']")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
npm pack --silent --pack-destination "$work" "@grafana/data@$version" >/dev/null
tar -xzf "$work"/grafana-data-*.tgz -C "$work"
{
  echo "# Unit ids of @grafana/data $version (Apache-2.0, Grafana Labs), from valueFormats/categories; do not edit, run generate.sh"
  grep -o 'id: "[^"]*"' "$work/package/dist/esm/valueFormats/categories.mjs" | sed 's/^id: "//; s/"$//' | LC_ALL=C sort -u
} > "units-$version.txt"
