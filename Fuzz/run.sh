#!/usr/bin/env bash
# Builds the fuzzers with libFuzzer and runs each for SECONDS (default 600), growing
# the corpora in Fuzz/Corpus. Stops at the first crash, leaving the input in Fuzz/.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
swift build -c release --sanitize=fuzzer 2>&1 | tail -1
for f in FuzzCommandParser FuzzQueryParser; do
    mkdir -p "Corpus/$f"
    ".build/release/$f" -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=5 -max_len=4096 \
        -artifact_prefix="./crash-$f-" "Corpus/$f" 2>&1 | tail -4
done
