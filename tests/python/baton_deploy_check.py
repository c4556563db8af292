#!/usr/bin/env python3
"""Checks the deployment files under deploy/ offline, as no container engine
or cluster runs where Baton is developed:

- the Dockerfile passes hadolint, and copies the four binaries;
- compose.yaml validates against the compose specification's JSON schema;
- the Kustomize base and every overlay render (kubectl kustomize) and each
  resource validates, strictly, against Kubernetes' own schemas
  (kubernetes-validate); Strimzi KafkaTopic resources carry the partitions,
  replicas and settings of deploy/topics.sh;
- every Baton container in compose and Kubernetes runs one of the four
  binaries, with only flags its `--help` lists, and every port it declares
  is one its flags listen on; every BATON_ variable names a settings table
  the binary's `--help` reads;
- with --tls-dir, every Baton container of the Kubernetes files that reads
  a configuration from a ConfigMap is started with it (the TLS paths moved
  to certificates made by the test, its listeners on 0.0.0.0, Kafka
  unreachable) and must get past its configuration, TLS and the
  secure-by-default check to serving metrics over TLS.

    .tools/venv/bin/python tests/python/baton_deploy_check.py \\
        --deploy deploy --binaries target/debug --kubectl .tools/bin/kubectl

It prints one JSON line per check on stdout ({"check": ..., "ok": ...,
"problems": [...]}) and exits non-zero when any check found a problem.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BINARIES = ("baton", "baton-ingest", "baton-projector", "baton-query")
TOOLS = Path(sys.executable).parent


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def help_text(binaries: Path, binary: str, cache: dict[str, str]) -> str:
    if binary not in cache:
        done = run([str(binaries / binary), "--help"])
        cache[binary] = done.stdout if done.returncode == 0 else ""
    return cache[binary]


def flags_in_help(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))


def check_container(
    where: str,
    command: list[str],
    ports: list[int],
    environment: dict[str, str],
    binaries: Path,
    helps: dict[str, str],
) -> list[str]:
    """Problems of one Baton container: its binary, flags, ports and BATON_
    variables against what the binary's --help says."""
    problems = []
    if not command:
        return [f"{where}: no command: name one of {', '.join(BINARIES)}"]
    binary = command[0]
    if binary not in BINARIES:
        return [f"{where}: runs {binary!r}, not one of {', '.join(BINARIES)}"]
    text = help_text(binaries, binary, helps)
    if not text:
        return [f"{where}: {binary} --help failed"]
    known = flags_in_help(text)
    listening: set[int] = set()
    for argument in command[1:]:
        if not argument.startswith("--"):
            continue
        flag, _, value = argument.partition("=")
        if flag not in known:
            problems.append(f"{where}: {binary} has no flag {flag} (its --help lists {sorted(known)})")
        if flag.endswith("listen") and ":" in value:
            listening.add(int(value.rsplit(":", 1)[1]))
    for port in ports:
        if port not in listening:
            problems.append(
                f"{where}: port {port} is declared but no --*-listen flag of {binary} listens on it "
                f"(listening: {sorted(listening)})"
            )
    for name in environment:
        if not name.startswith("BATON_"):
            continue
        table = name.split("__", 1)[0] + "__" if "__" in name else name
        if table not in text:
            problems.append(f"{where}: {binary} reads no {table}<KEY> variables (see its --help)")
    return problems


TLS_MOUNT = "/etc/baton/tls"


def start_with_config(
    where: str, command: list[str], toml: str, tls_dir: Path, binaries: Path
) -> list[str]:
    """Starts one container's binary with its configuration as the cluster
    would, and waits for it to serve metrics over TLS."""
    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "baton.toml"
        config.write_text(toml.replace(TLS_MOUNT, str(tls_dir)))
        args = []
        for argument in command[1:]:
            flag, _, value = argument.partition("=")
            if flag == "--config":
                value = str(config)
            elif flag == "--kafka":
                value = "127.0.0.1:9"
            elif flag == "--data-dir":
                value = str(Path(scratch) / "data")
            elif flag.endswith("listen") and ":" in value:
                value = value.rsplit(":", 1)[0] + ":0"
            args.append(f"{flag}={value}" if value else flag)
        log = Path(scratch) / "log"
        with log.open("w") as out:
            child = subprocess.Popen(
                [str(binaries / command[0]), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={"RUST_LOG": "info", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
            )
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    text = log.read_text()
                    if "metrics listening" in text and "tls=true" in text:
                        return []
                    if child.poll() is not None:
                        break
                    time.sleep(0.2)
            finally:
                child.kill()
                child.wait()
        excerpt = " | ".join(log.read_text().strip().splitlines()[:6])
        return [f"{where}: {command[0]} did not start serving metrics over TLS with its configuration: {excerpt}"]


def check_dockerfile(deploy: Path) -> list[str]:
    dockerfile = deploy / "Dockerfile"
    done = run([str(TOOLS / "hadolint"), str(dockerfile)])
    problems = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if done.returncode != 0 and not problems:
        problems.append(f"hadolint exited with {done.returncode}")
    text = dockerfile.read_text()
    for binary in BINARIES:
        if f"target/release/{binary} " not in text and f"target/release/{binary}\n" not in text:
            problems.append(f"Dockerfile: does not copy target/release/{binary}")
    if not re.search(r"^USER\s+(?!0\b|root\b)\S+", text, re.MULTILINE):
        problems.append("Dockerfile: the image does not run as a non-root USER")
    return problems


def check_compose(deploy: Path, binaries: Path, helps: dict[str, str]) -> list[str]:
    compose = deploy / "compose.yaml"
    done = run(
        [str(TOOLS / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(compose)]
    )
    problems = [] if done.returncode == 0 else [(done.stdout + done.stderr).strip()]
    document = yaml.safe_load(compose.read_text())
    for name, service in document.get("services", {}).items():
        if not str(service.get("image", "")).startswith("baton:"):
            continue
        entrypoint = service.get("entrypoint", [])
        command = service.get("command", [])
        entrypoint = shlex.split(entrypoint) if isinstance(entrypoint, str) else entrypoint
        command = shlex.split(command) if isinstance(command, str) else command
        ports = [int(str(port).rsplit(":", 1)[1]) for port in service.get("ports", [])]
        environment = service.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        problems += check_container(
            f"compose service {name}", entrypoint + command, ports, environment, binaries, helps
        )
    return problems


def topics_of_script(script: Path) -> dict[str, dict[str, str]]:
    """Each topic deploy/topics.sh creates, with its --config settings (the
    min.insync.replicas every topic gets included)."""
    topics = {}
    text = script.read_text()
    default_insync = re.search(r'MIN_INSYNC="\$\{MIN_INSYNC_REPLICAS:-(\d+)\}"', text)
    for line in text.splitlines():
        if not line.startswith("create "):
            continue
        words = shlex.split(line)
        settings = {"min.insync.replicas": default_insync.group(1)} if default_insync else {}
        for flag, value in zip(words[2:], words[3:]):
            if flag == "--config":
                key, _, setting = value.partition("=")
                settings[key] = setting
        topics[words[1]] = settings
    return topics


def check_kubernetes(
    deploy: Path, kubectl: str, binaries: Path, helps: dict[str, str], tls_dir: Path | None
) -> tuple[list[str], list[str], int]:
    """Problems, the kustomizations rendered, and how many containers were
    started with their configuration."""
    problems: list[str] = []
    rendered = []
    started = 0
    expected_topics = topics_of_script(deploy / "topics.sh")
    for kustomization in sorted((deploy / "k8s").rglob("kustomization.yaml")):
        folder = kustomization.parent
        where = str(folder.relative_to(deploy.parent))
        done = run([kubectl, "kustomize", str(folder)])
        if done.returncode != 0:
            problems.append(f"{where}: kubectl kustomize failed: {done.stderr.strip()}")
            continue
        rendered.append(where)
        validated = run(
            [str(TOOLS / "kubernetes-validate"), "--strict", "--quiet", "-"],
            input=done.stdout,
        )
        for line in (validated.stdout + validated.stderr).splitlines():
            if "ERROR" in line or ("WARN" in line and "KafkaTopic" not in line):
                problems.append(f"{where}: {line.strip()}")
        if validated.returncode != 0 and not problems:
            problems.append(f"{where}: kubernetes-validate exited with {validated.returncode}")
        topics_seen = set()
        resources = [r for r in yaml.safe_load_all(done.stdout) if r]
        config_maps = {
            r["metadata"]["name"]: r.get("data", {}) for r in resources if r.get("kind") == "ConfigMap"
        }
        for resource in resources:
            kind, name = resource.get("kind"), resource["metadata"]["name"]
            if kind == "KafkaTopic":
                topics_seen.add(name)
                want = expected_topics.get(name)
                if want is None:
                    problems.append(f"{where}: KafkaTopic {name} is not a topic of deploy/topics.sh")
                    continue
                have = {k: str(v) for k, v in (resource["spec"].get("config") or {}).items()}
                if have != want:
                    problems.append(f"{where}: KafkaTopic {name} has config {have}, deploy/topics.sh {want}")
                continue
            spec = resource.get("spec", {})
            template = spec.get("template", {}).get("spec", {})
            for container in template.get("containers", []):
                if not str(container.get("image", "")).split("/")[-1].startswith("baton"):
                    continue
                command = list(container.get("command", [])) + list(container.get("args", []))
                ports = [port["containerPort"] for port in container.get("ports", [])]
                environment = {env["name"]: env.get("value", "") for env in container.get("env", [])}
                problems += check_container(
                    f"{where}: {kind} {name}", command, ports, environment, binaries, helps
                )
                if tls_dir is not None and where.endswith("base"):
                    toml = config_of(command, container, template, config_maps)
                    if toml is not None:
                        started += 1
                        problems += start_with_config(
                            f"{where}: {kind} {name}", command, toml, tls_dir, binaries
                        )
        missing = set(expected_topics) - topics_seen
        if missing:
            problems.append(f"{where}: no KafkaTopic for {sorted(missing)}")
    if not rendered:
        problems.append("no kustomization.yaml rendered under deploy/k8s")
    return problems, rendered, started


def config_of(command, container, template, config_maps) -> str | None:
    """The configuration file `--config` names, when a ConfigMap volume
    mounted in the container holds it."""
    path = next((a.split("=", 1)[1] for a in command if a.startswith("--config=")), None)
    if path is None:
        return None
    volumes = {v["name"]: v for v in template.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        folder = mount["mountPath"].rstrip("/") + "/"
        volume = volumes.get(mount["name"], {})
        if path.startswith(folder) and "configMap" in volume:
            data = config_maps.get(volume["configMap"]["name"], {})
            return data.get(path[len(folder):])
    return None


def check_prometheus(deploy: Path) -> list[str]:
    done = run(["promtool", "check", "config", str(deploy / "prometheus.yml")])
    return [] if done.returncode == 0 else [(done.stdout + done.stderr).strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deploy", required=True, type=Path, help="the deploy/ folder")
    parser.add_argument("--binaries", required=True, type=Path, help="folder of the four Baton binaries")
    parser.add_argument("--kubectl", required=True, help="kubectl with kustomize built in")
    parser.add_argument(
        "--tls-dir",
        type=Path,
        help="ca.crt, tls.crt and tls.key to start the Kubernetes containers with (mounted at /etc/baton/tls there)",
    )
    args = parser.parse_args()
    helps: dict[str, str] = {}
    failed = False

    def report(check: str, problems: list[str], **extra) -> None:
        nonlocal failed
        failed |= bool(problems)
        print(json.dumps({"check": check, "ok": not problems, "problems": problems, **extra}))

    report("dockerfile", check_dockerfile(args.deploy))
    report("prometheus", check_prometheus(args.deploy))
    report("compose", check_compose(args.deploy, args.binaries, helps))
    problems, rendered, started = check_kubernetes(
        args.deploy, args.kubectl, args.binaries, helps, args.tls_dir
    )
    report("kubernetes", problems, rendered=rendered, started=started)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
