#!/usr/bin/env bash
# Records the current proto contract as the baseline the CI check compares
# against. Refuses when the change is breaking: make a v2 package instead.
set -euo pipefail
cd "$(dirname "$0")/.."
BATON_UPDATE_DESCRIPTOR=1 cargo test -p baton-proto --test contract -- v1_has_no_breaking_change
echo "recorded proto/descriptor/baton-v1.binpb; commit it with the .proto change"
