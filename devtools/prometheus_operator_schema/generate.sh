#!/usr/bin/env bash
# Regenerates servicemonitor-v1.schema.json and prometheusrule-v1.schema.json from the npm packages
# pinned in package-lock.json (needs Node >= 20 and npm). See README.md.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
node generate.mjs
