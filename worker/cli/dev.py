"""``stylequeue dev``: the whole system on one machine, no Docker, in one command.

Starts Redis and an S3 server (SeaweedFS) from the pip-installed binaries the tests use (or uses
existing ones), a worker with the same ``stylequeue worker`` command the containers run, the HTTP
API (``stylequeue api``, with a fresh key) and its webhook notifier, prints a curl line that
submits a job through the API, uploads the generated sample pair, submits a job, shows its
progress and writes the result locally. Ctrl-C stops everything; ``--serve`` keeps the stack up
for more jobs until then.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BUCKET = "stylequeue-dev"


def add_commands(sub: Any) -> None:
    """Register ``dev``."""
    p = sub.add_parser(
        "dev",
        help="run Redis, an S3 server and a worker locally; stylize the samples",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--dir", default="stylequeue-dev", help="working directory (default ./stylequeue-dev)")
    p.add_argument(
        "--weights",
        default=None,
        help="VGG19 weights: a Keras weights file, s3:// URI or 'imagenet' (default $STYLEQUEUE_WEIGHTS)",
    )
    p.add_argument(
        "--redis-url",
        default=None,
        help="use this Redis instead of starting one (a sentinel:// URL with STYLEQUEUE_REDIS_MASTER_NAME)",
    )
    p.add_argument(
        "--s3-endpoint",
        default=None,
        help="use this S3 endpoint instead of starting SeaweedFS (credentials from the AWS variables)",
    )
    p.add_argument("--bucket", default=BUCKET, help=f"bucket for inputs and results (default {BUCKET})")
    p.add_argument("--size", type=int, default=256, help="output longest side in px (default 256)")
    p.add_argument("--iterations", type=int, default=50, help="L-BFGS iterations (default 50)")
    p.add_argument("-o", "--output", default=None, help="result file (default DIR/result.png)")
    p.add_argument("--api-port", type=int, default=None, help="port of the HTTP API (default: a free one)")
    p.add_argument("--serve", action="store_true", help="keep the stack running after the demo job, until Ctrl-C")
    p.set_defaults(run=run_dev)


def _check_weights(weights: str) -> None:
    """Load the weights here first, so a missing download fails with advice instead of a crash loop."""
    if weights.startswith("s3://"):
        return  # fetched by the worker from the store
    from producer.core.params import SEED_STYLE_LAYERS
    from worker.nst import quiet, vgg

    quiet.tensorflow()
    vgg.feature_model(weights, SEED_STYLE_LAYERS)


def _api_key(base: Path, bucket: str, env: dict[str, str]) -> str:
    """A fresh key for tenant ``dev`` (inputs and results in the dev bucket), in a keys file in ``base``."""
    from producer.tenants import Tenant, hash_key, new_key
    from producer.webhooks import new_secret

    key = new_key()
    tenant = Tenant("dev", hash_key(key), (bucket,), (f"{bucket}/results/",), 0, 100.0, 200, 10_000, new_secret())
    path = base / "api-keys.json"
    path.write_text(json.dumps({"keys": [tenant.to_dict()]}, indent=2))
    env.update(
        STYLEQUEUE_API_KEYS_FILE=str(path),
        # Local experiments: webhooks to a receiver on this machine, over plain http.
        STYLEQUEUE_WEBHOOK_ALLOW_HTTP="1",
        STYLEQUEUE_WEBHOOK_ALLOW_NETWORKS="127.0.0.0/8",
    )
    return key


def _answers(url: str, timeout_s: float) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def run_dev(args: argparse.Namespace) -> int:
    """Run ``stylequeue dev``; returns the exit code."""
    from producer.core.settings import Settings
    from producer.devstack import free_port, stop_groups

    base = Path(args.dir).resolve()
    weights = args.weights or Settings.from_env().weights
    print(f"checking VGG19 weights ({weights}) ...", file=sys.stderr)
    _check_weights(weights)

    started: list[Any] = []
    helpers: list[subprocess.Popen[bytes]] = []  # the API and the notifier
    worker: subprocess.Popen[bytes] | None = None
    # Ctrl-C and SIGTERM both end the demo through KeyboardInterrupt, so cleanup always runs.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        env, metrics_port = _environment(args, base, weights, started)
        log_path = base / "worker.log"
        worker = _spawn(["worker", "-c", "1", "-n", "dev@%h"], env, log_path)
        api_port = args.api_port or free_port()
        key = _api_key(base, args.bucket, env)
        for command in (["api", "--host", "127.0.0.1", "--port", str(api_port)], ["notifier", "-c", "4"]):
            helpers.append(_spawn(command, env, base / f"{command[0]}.log"))
        print(f"worker log: {log_path}; metrics: http://127.0.0.1:{metrics_port}/metrics", file=sys.stderr)
        _demo(args, base, env, f"http://127.0.0.1:{api_port}", key)
        if args.serve:
            return _serve(args, env, worker, log_path)
        return 0
    except KeyboardInterrupt:
        print("stopping ...", file=sys.stderr)
        return 130
    finally:
        # All at once (the slowest bounds Ctrl-C): the API and the notifier 10 s, the worker 60 s
        # (SIGTERM: warm shutdown, a running job is finished).
        stop_groups([(helper, 10.0) for helper in helpers] + ([(worker, 60.0)] if worker is not None else []))
        for service in reversed(started):
            service.stop()
        print("stopped", file=sys.stderr)


def _environment(args: argparse.Namespace, base: Path, weights: str, started: list[Any]) -> tuple[dict[str, str], int]:
    """The stack's environment (Redis and S3 started here unless given); its metrics port."""
    from producer.devstack import DEV_KEY, RedisServer, SeaweedS3, free_port

    env = dict(os.environ)
    if args.redis_url:
        env["STYLEQUEUE_BROKER_URL"] = args.redis_url
    else:
        started.append(RedisServer(base / "redis").start())
        env["STYLEQUEUE_BROKER_URL"] = started[-1].url
    if args.s3_endpoint:
        env["STYLEQUEUE_S3_ENDPOINT_URL"] = args.s3_endpoint
    else:
        started.append(SeaweedS3(base / "s3", buckets=[args.bucket]).start())
        env.update(
            STYLEQUEUE_S3_ENDPOINT_URL=started[-1].endpoint,
            AWS_ACCESS_KEY_ID=DEV_KEY,
            AWS_SECRET_ACCESS_KEY=DEV_KEY,
        )
    metrics_port = free_port()
    env.update(
        STYLEQUEUE_WEIGHTS=weights,
        STYLEQUEUE_METRICS_PORT=str(metrics_port),
        STYLEQUEUE_HEALTH_DIR=str(base / "health"),
        STYLEQUEUE_INPUT_BUCKETS=args.bucket,
        STYLEQUEUE_OUTPUT_BUCKETS=f"{args.bucket}/results/",
    )
    if args.weights:  # an explicit file replaces the environment's, and its checksum
        env.pop("STYLEQUEUE_WEIGHTS_SHA256", None)
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if k in env})
    return env, metrics_port


def _spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``stylequeue COMMAND`` in its own process group, its output to ``log_path``."""
    with open(log_path, "wb") as log_file:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "producer.cli", *command],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _demo(args: argparse.Namespace, base: Path, env: dict[str, str], api: str, key: str) -> None:
    """Upload the samples, submit one job, print how to use the API, wait and write the result."""
    from producer.cli.progressbar import ProgressBar
    from producer.client import Client
    from producer.core.contract import ObjectRef
    from producer.core.settings import Settings
    from producer.storage import Store
    from worker.cli import samples

    settings = Settings.from_env(env)
    client, store = Client(settings), Store(settings)
    content, style = samples.write(base / "samples")
    refs = [ObjectRef(args.bucket, f"samples/{p.name}") for p in (content, style)]
    for path, ref in zip((content, style), refs):
        store.upload_file(path, ref, content_type="image/png")
    message: dict[str, Any] = {
        "content": refs[0].uri,
        "style": refs[1].uri,
        "output": f"s3://{args.bucket}/results/",
        "params": {"size": args.size, "iterations": args.iterations},
    }
    job = client.submit(message["content"], message["style"], message["output"], message["params"])
    headers = f"-H 'Authorization: Bearer {key}' -H 'Content-Type: application/json'"
    curl = f"curl -sS -X POST {api}/v1/jobs {headers} -d '{json.dumps(message)}'"
    if _answers(f"{api}/healthz", 30):
        print(f"HTTP API: {api}/docs (key {key}); submit a job with:\n  {curl}", flush=True)
    else:
        print(f"the HTTP API did not start; see {base / 'api.log'}", file=sys.stderr)
    print(f"submitted job {job.id}; the first one waits for the worker to load VGG19", file=sys.stderr)
    bar = ProgressBar()
    try:
        result = job.wait(timeout=3600, on_progress=bar)
    finally:
        bar.close()
    out = Path(args.output) if args.output else base / "result.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(store.get(ObjectRef.parse(result.output, "output")))
    print(
        f"wrote {out} ({result.width}x{result.height}): loss {result.loss:.6g}, "
        f"{result.iterations} iterations, {result.seconds:.1f} s"
    )


def _serve(args: argparse.Namespace, env: dict[str, str], worker: subprocess.Popen[bytes], log_path: Path) -> int:
    """Keep the stack up until Ctrl-C (KeyboardInterrupt) or the worker exits (1)."""
    names = ("STYLEQUEUE_BROKER_URL", "STYLEQUEUE_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    exports = " ".join(f"{k}={env[k]}" for k in names)
    print(
        f"stack running; in another shell: export {exports}\n"
        f"  stylequeue submit ./photo.jpg ./painting.jpg --bucket {args.bucket} --wait\n"
        "press Ctrl-C to stop",
        flush=True,
    )
    while worker.poll() is None:
        time.sleep(1)  # nothing to do but wait for Ctrl-C
    print(f"worker exited with code {worker.returncode}; see {log_path}", file=sys.stderr)
    return 1
