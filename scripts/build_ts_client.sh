#!/usr/bin/env bash
# `make ts-client`: installs clients/typescript's pinned dependencies (npm ci, only when package-lock.json is newer
# than the last install) and compiles the package with tsc into dist/. Without npm, or when the npm registry
# cannot be reached, it says so and exits 0: the tests that need the package then skip, giving that reason.
set -euo pipefail
cd "$(dirname "$0")/../clients/typescript"
if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found: the TypeScript client tests will be skipped (install Node.js 20+ with npm)"
  exit 0
fi
if [ ! node_modules/.package-lock.json -nt package-lock.json ]; then
  echo "installing clients/typescript's dependencies (npm ci)"
  if ! npm ci --no-audit --no-fund --loglevel=error; then
    rm -rf node_modules
    echo "npm ci failed: the TypeScript client tests will be skipped"
    exit 0
  fi
fi
npm run --silent build
