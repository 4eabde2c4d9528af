#!/usr/bin/env bash
# Longer fuzz campaign: the smoke run with more time per target (default 60 s; set
# FUZZ_SECONDS for more). The corpus in fuzz/corpus/<target> grows across runs on a machine.
# Same last line and exit status as tests/fuzz/smoke.sh.
#
#   tests/fuzz/campaign.sh
#   FUZZ_SECONDS=600 tests/fuzz/campaign.sh
set -euo pipefail
export FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/smoke.sh" "$@"
