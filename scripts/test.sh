#!/usr/bin/env bash
# Sets up what is missing, builds everything (the broker binaries too: the end-to-end
# tests start them), and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
swift build --build-tests
swift test --skip-build "$@"
