#!/usr/bin/env bash
# Sets up what is missing, builds everything (the broker binaries too: the end-to-end
# tests start them), and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
swift build --build-tests
# One test at a time: many end-to-end tests block a thread on sockets and sleeps, and
# Swift runs tests on its cooperative pool, which has one thread per core (2 in CI).
# Run side by side, they starved the async tests of threads: a test whose client
# resumed 10 s late failed on a timeout it never meant to test. Serially the suite
# takes about 20 s longer (~75 s here).
swift test --skip-build --no-parallel "$@"
