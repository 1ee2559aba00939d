"""The containers and manifests, checked without a Docker engine (none runs here or in CI).

docker-compose.yml is validated against the Compose Specification's JSON schema (extracted by
`make test` into the venv from the docker-compose 1.29.2 wheel on PyPI, which ships it) and then
for what operating it needs; the
Dockerfile is parsed with BuildKit's own parser (the `dockerfile` package) and checked.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path

import dockerfile
import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(sys.prefix) / "share" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def env_file() -> dict[str, str]:
    lines = (ROOT / "deploy" / "stylequeue.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return int(duration[:-1]) * units[duration[-1]]


def test_compose_file_follows_the_compose_specification(compose: dict) -> None:
    assert SCHEMA.exists(), f"{SCHEMA} missing: `make test` extracts it from the docker-compose 1.29.2 wheel"
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, errors
    typo = {
        **compose,
        "services": {**compose["services"], "redis": {**compose["services"]["redis"], "stop_grace": "1m"}},
    }
    assert list(validator.iter_errors(typo))  # the schema is strict enough to catch a typo


def test_redis_persists_and_never_evicts(compose: dict) -> None:
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert compose["services"]["redis"]["healthcheck"]


def test_the_store_is_healthy_only_when_the_endpoint_the_workers_use_answers(compose: dict) -> None:
    """Its health check probes the S3 port of STYLEQUEUE_S3_ENDPOINT_URL, not the master (up before S3)."""
    from urllib.parse import urlsplit

    endpoint = urlsplit(compose["x-worker"]["environment"]["STYLEQUEUE_S3_ENDPOINT_URL"])
    probe = urlsplit(compose["services"]["seaweedfs"]["healthcheck"]["test"][-1])
    assert endpoint.hostname == "seaweedfs" and probe.port == endpoint.port == 8333, probe
    assert compose["x-worker"]["depends_on"]["seaweedfs"]["condition"] == "service_healthy"


def test_one_gpu_service_per_gpu(compose: dict) -> None:
    gpu = {name: s for name, s in compose["services"].items() if name.startswith("worker-gpu")}
    assert len(gpu) >= 2
    ids = []
    for service in gpu.values():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        ids += device["device_ids"]
    assert len(ids) == len(set(ids))  # each service pinned to its own GPU


def test_workers_run_the_same_command_everywhere(compose: dict) -> None:
    from producer.core.settings import Settings
    from worker.cli.operate import worker_argv

    workers = [s for name, s in compose["services"].items() if name.startswith("worker-")]
    assert {tuple(s["command"][:2]) for s in workers} == {("stylequeue", "worker")}
    cmd = [c for c in dockerfile.parse_file(str(ROOT / "worker" / "Dockerfile")) if c.cmd == "CMD"][-1]
    assert list(cmd.value) == ["stylequeue", "worker"]
    k8s = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "worker.yaml").read_text()))
    assert k8s[0]["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["stylequeue", "worker"]
    dev_source = (ROOT / "worker" / "cli" / "dev.py").read_text()
    # stylequeue dev starts `stylequeue worker` too
    assert '_spawn(["worker",' in dev_source and '"producer.cli", *command' in dev_source
    argv = worker_argv(Settings(), 2, "n@%h", "INFO", [])
    assert argv[1:6] == ["-m", "celery", "-A", "worker.app", "worker"] and "--pool" in argv


def test_warm_shutdown_fits_in_the_grace_periods(compose: dict) -> None:
    hard = int(env_file()["STYLEQUEUE_HARD_TIME_LIMIT_S"])
    assert int(env_file()["STYLEQUEUE_SOFT_TIME_LIMIT_S"]) < hard
    for name, service in compose["services"].items():
        if name.startswith("worker-"):
            assert seconds(service["stop_grace_period"]) > hard
            assert "stylequeue" in service["healthcheck"]["test"] and "health" in service["healthcheck"]["test"]
    pod = next(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "worker.yaml").read_text()))["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > hard
    assert pod["containers"][0]["livenessProbe"]["exec"]["command"][:2] == ["stylequeue", "health"]


def test_cpu_profile_and_flower(compose: dict) -> None:
    cpu = compose["services"]["worker-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    assert not cpu["build"]["args"]["BASE_IMAGE"].endswith("-gpu")
    assert "flower" in compose["services"]
    for service in compose["services"].values():
        for f in service.get("env_file", []):
            assert (ROOT / f).exists()


def test_dockerfile() -> None:
    commands = dockerfile.parse_file(str(ROOT / "worker" / "Dockerfile"))
    by = {}
    for c in commands:
        by.setdefault(c.cmd, []).append(c)
    args = {c.value[0].split("=")[0]: c.value[0].split("=", 1)[1] for c in by["ARG"] if "=" in c.value[0]}
    base = args["BASE_IMAGE"]
    assert ":" in base and not base.endswith(":latest") and base.endswith("-gpu")  # pinned GPU base
    assert by["FROM"][0].value[0] == "${BASE_IMAGE}"
    assert by["USER"][-1].value[0] not in ("root", "0")
    health = by["HEALTHCHECK"][0].value
    assert "stylequeue" in health and "health" in health
    assert any('".[worker,traces]"' in " ".join(c.value) for c in by["RUN"])  # traces: on with an OTLP endpoint
    for copy in by["COPY"]:
        for source in copy.value[:-1]:
            assert (ROOT / source).exists(), source
    keda, sentinel = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "keda.yaml").read_text())
    assert "celery_queue_length" in keda["spec"]["triggers"][0]["metadata"]["query"]
    trigger = sentinel["spec"]["triggers"][0]
    assert trigger["type"] == "redis-sentinel" and trigger["metadata"]["sentinelMaster"] == "stylequeue"


def test_api_and_notifier_services_run_the_light_image(compose: dict) -> None:
    api, notifier = compose["services"]["api"], compose["services"]["notifier"]
    assert api["command"][:2] == ["stylequeue", "api"] and notifier["command"][:2] == ["stylequeue", "notifier"]
    assert api["build"]["dockerfile"] == "producer/Dockerfile" and notifier["image"] == api["image"]
    for service in (api, notifier):
        mount = next(v for v in service["volumes"] if "api-keys.json" in v)
        assert (ROOT / mount.split(":")[0]).exists()
        assert service["environment"]["STYLEQUEUE_API_KEYS_FILE"] == mount.split(":")[1]
    commands = dockerfile.parse_file(str(ROOT / "producer" / "Dockerfile"))
    installs = " ".join(" ".join(c.value) for c in commands if c.cmd == "RUN")
    assert '".[api,traces]"' in installs and "tensorflow" not in installs.lower()
    assert [c for c in commands if c.cmd == "USER"][-1].value[0] not in ("root", "0")
    for copy in (c for c in commands if c.cmd == "COPY"):
        for source in copy.value[:-1]:
            assert (ROOT / source).exists(), source
    docs = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "api.yaml").read_text())
    k8s = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    pod = k8s["stylequeue-api"]["spec"]["template"]["spec"]["containers"][0]
    assert pod["command"][:2] == ["stylequeue", "api"] and pod["readinessProbe"]["httpGet"]["path"] == "/readyz"
    notifier_pod = k8s["stylequeue-notifier"]["spec"]["template"]["spec"]["containers"][0]
    assert notifier_pod["command"][:2] == ["stylequeue", "notifier"]


def test_gpu_and_cpu_workers_differ_only_in_base_image_and_devices(compose: dict) -> None:
    """The CPU variant (built and run for real by tests/containers) stands for the GPU one."""
    services = compose["services"]

    def essentials(service: dict) -> dict:
        kept = {k: v for k, v in service.items() if k not in ("deploy", "profiles", "image", "hostname")}
        kept["build"] = {k: v for k, v in service["build"].items() if k != "args"}
        return kept

    gpu, cpu = services["worker-gpu0"], services["worker-cpu"]
    assert essentials(gpu) == essentials(cpu)
    assert gpu["deploy"]["resources"]["reservations"]["devices"] and "deploy" not in cpu
    base_gpu = next(c for c in dockerfile.parse_file(str(ROOT / "worker" / "Dockerfile")) if c.cmd == "ARG").value[0]
    assert base_gpu.split("=", 1)[1].replace("-gpu", "") == cpu["build"]["args"]["BASE_IMAGE"]


REDIS = ("redis", "redis-replica-1", "redis-replica-2")


def test_the_ha_compose_file_points_every_redis_client_at_the_sentinels(compose: dict) -> None:
    ha = yaml.safe_load((ROOT / "deploy" / "compose.ha.yml").read_text())
    conf = (ROOT / "deploy" / "sentinel" / "sentinel.conf").read_text()
    sentinels = sorted(n for n in ha["services"] if n.startswith("sentinel-"))
    assert len(sentinels) == 3
    # Servers by fixed address (a Sentinel's DNS lookups block its loop): inside the subnet, none
    # in the range other containers are given, the primary's the one the Sentinels and replicas use.
    (pool,) = ha["networks"]["default"]["ipam"]["config"]
    subnet, dynamic = ipaddress.ip_network(pool["subnet"]), ipaddress.ip_network(pool["ip_range"])
    address = {n: ipaddress.ip_address(ha["services"][n]["networks"]["default"]["ipv4_address"]) for n in REDIS}
    assert all(a in subnet and a not in dynamic for a in address.values()) and len(set(address.values())) == 3
    assert f"sentinel monitor stylequeue {address['redis']} 6379 2" in conf
    assert "resolve-hostnames" not in conf
    for name in ("redis-replica-1", "redis-replica-2"):
        command = ha["services"][name]["command"]
        i = command.index("--replicaof")
        assert command[i + 1 : i + 3] == [str(address["redis"]), "6379"]
    for name, service in compose["services"].items():  # every service of the base file that uses Redis
        env = service.get("environment") or {}
        if "STYLEQUEUE_BROKER_URL" not in env:
            continue
        merged = {**env, **ha["services"][name]["environment"]}
        hosts = merged["STYLEQUEUE_BROKER_URL"].split(";")
        assert [h.split("//")[1].split(":")[0] for h in hosts] == sentinels, name
        assert merged["STYLEQUEUE_REDIS_MASTER_NAME"] == "stylequeue", name
    assert "sentinel://sentinel-1:26379" in " ".join(ha["services"]["flower"]["command"])
    assert "master_name" in (ROOT / "deploy" / "flower" / "stylequeue_celery.py").read_text()


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    test_section = readme.split("## Test", 1)[1].split("\n## ", 1)[0]
    command = test_section.split("```bash\n", 1)[1].split("\n```", 1)[0].strip()
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))
    ]
    assert ci == [command], (ci, command)
