#!/usr/bin/env bash
# Installs what building and testing Baton needs, idempotently. Safe to run
# again: each step checks before it installs.
#
# Baton needs no system protoc (protox compiles the .proto files in
# build.rs) and no broker for the embedded backbone.
set -euo pipefail

if ! command -v cargo >/dev/null; then
    echo "error: cargo not found: install Rust from https://rustup.rs (Baton needs 1.88 or newer)" >&2
    exit 1
fi

if command -v rustup >/dev/null; then
    for component in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
            echo "installing the Rust component ${component}"
            rustup component add "${component}"
        fi
    done
fi
