"""Baton's contract as Python classes, generated from the repository's proto/
at run time with grpcio-tools: none of Baton's own code.

Both independent clients of the end-to-end tests use it: the Kafka client
(baton_kafka_client.py) for the message classes, the gRPC client
(baton_grpc_client.py) for the service stubs as well. Generated modules are
cached under .tools/pb2/<digest of proto/ and the tool versions>, so they
always match the contract in the working tree.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PROTO_DIR = REPO_ROOT / "proto"
# Bumped when what generate() writes changes (the _grpc modules came later).
LAYOUT = "messages+services 1"


class ClientError(Exception):
    """A failure to report on stderr as one concise message, exit status 1."""


# --- message classes generated from proto/ ----------------------------------


def proto_files(proto_dir: Path) -> list[Path]:
    # Baton's own packages; proto/google/ holds the vendored google.rpc
    # error details, which only reflection needs.
    files = sorted(p for p in (proto_dir / "baton").rglob("*.proto") if p.is_file())
    if not files:
        raise ClientError(f"no .proto files under {proto_dir}")
    return files


def generate(proto_dir: Path, out: Path) -> list[str]:
    """Generates the *_pb2.py modules of every .proto under proto_dir into out.

    Returns the module names (e.g. baton.events.v1.events_pb2).
    """
    try:
        from grpc_tools import protoc
    except ImportError as err:
        raise ClientError(
            f"grpcio-tools is needed to generate the message classes ({err}); "
            "run scripts/setup.sh and use .tools/venv/bin/python"
        ) from None
    import importlib.resources

    files = proto_files(proto_dir)
    out.mkdir(parents=True, exist_ok=True)
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *(str(f) for f in files),
    ]
    if protoc.main(args) != 0:
        raise ClientError(f"protoc could not compile {proto_dir} (its message is above)")
    return [
        ".".join(f.relative_to(proto_dir).with_suffix("").parts) + "_pb2" for f in files
    ]


def proto_digest(proto_dir: Path) -> str:
    digest = hashlib.sha256()
    try:
        import importlib.metadata

        from google.protobuf import __version__ as protobuf_version

        tools_version = importlib.metadata.version("grpcio-tools")
    except Exception:  # the digest only has to change when they do
        protobuf_version, tools_version = "?", "?"
    digest.update(f"{LAYOUT} protobuf {protobuf_version} grpcio-tools {tools_version}\n".encode())
    for f in proto_files(proto_dir):
        digest.update(str(f.relative_to(proto_dir)).encode() + b"\0")
        digest.update(f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    tools = REPO_ROOT / ".tools"
    if tools.is_dir():
        return tools / "pb2"
    return Path(tempfile.gettempdir()) / f"baton-pb2-{os.getuid()}"


def ensure_generated(proto_dir: Path, pb2_dir: Path | None) -> Path:
    """The directory holding generated modules for proto_dir, made if needed.

    Parallel test processes may race here: each generates into its own
    temporary directory and renames it into place; the loser drops its copy.
    """
    if pb2_dir is not None:
        if not (pb2_dir / "baton").is_dir():
            raise ClientError(f"{pb2_dir} holds no generated modules (run `gen --out {pb2_dir}`)")
        return pb2_dir
    if not proto_dir.is_dir():
        raise ClientError(f"proto directory not found: {proto_dir} (pass --proto-dir)")
    final = cache_root() / proto_digest(proto_dir)
    if (final / ".complete").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".gen-", dir=final.parent))
    try:
        generate(proto_dir, scratch)
        (scratch / ".complete").write_text("")
        try:
            os.rename(scratch, final)
        except OSError:
            if not (final / ".complete").exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final




def load(proto_dir: Path, pb2_dir: Path | None, *modules: str) -> list[ModuleType]:
    """Imports generated `modules` (e.g. "baton.events.v1.events_pb2")."""
    directory = ensure_generated(proto_dir, pb2_dir)
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    try:
        return [importlib.import_module(name) for name in modules]
    except ImportError as err:
        raise ClientError(f"the modules generated in {directory} do not import: {err}") from None
