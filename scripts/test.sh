#!/usr/bin/env bash
# Baton's test command: formatting, lints as errors, then every test.
# CI runs exactly this (.ci/run); so should you before you push.
#
#   scripts/test.sh            everything
#   scripts/test.sh -p baton-care   extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

step() { printf '\n==> %s\n' "$*"; }

step "shell scripts parse (bash -n)"
for script in scripts/*.sh deploy/*.sh .ci/run; do
    bash -n "$script"
done

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked "$@"

printf '\nAll checks passed.\n'
