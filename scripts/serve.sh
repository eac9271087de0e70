#!/usr/bin/env bash
# Sets up what is missing, builds the broker in release mode and runs it in the
# foreground on ./tortoise-data (extra arguments go to tortoised).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --product tortoised
exec .build/release/tortoised --data ./tortoise-data "$@"
