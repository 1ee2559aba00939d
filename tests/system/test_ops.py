"""Operating the workers with real processes: metrics, queue depth, health, warm shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import urllib.request

import pytest
from support.metrics import sample, scrape
from support.processes import CLI, CLI_IN_A_TERMINAL, own_workers
from support.waiting import wait_for

from producer.broker.queues import depth
from producer.core.errors import JobFailed

pytestmark = pytest.mark.slow


def test_metrics_after_jobs(client, worker, inputs, stack_env) -> None:
    port = int(stack_env["STYLEQUEUE_METRICS_PORT"])
    before = scrape(port)
    ok = client.submit(
        inputs["content.png"], inputs["style.jpg"], "s3://outputs/metrics/", {"size": 32, "iterations": 3}
    )
    ok.wait(timeout=120)
    bad = client.submit(inputs["not-an-image.jpg"], inputs["style.jpg"], "s3://outputs/metrics/", {"size": 32})
    with pytest.raises(JobFailed) as err:
        bad.wait(timeout=60)
    assert err.value.error_type == "ImageError", err.value
    task = {"name": "stylequeue.transfer", "hostname": socket.gethostname(), "queue_name": "stylequeue"}

    def delta(metric: str, text: str, **labels: str) -> float:
        try:
            old = sample(before, metric, **labels)
        except AssertionError:
            old = 0.0
        return sample(text, metric, **labels) - old

    def counted() -> str:
        # The result is stored before task_postrun updates the counters: wait for them (a first
        # failure's series does not exist until it is counted).
        text = scrape(port)
        try:
            failed = delta("celery_task_failed_total", text, exception="ImageError", **task)
        except AssertionError:
            failed = 0.0
        if failed < 1:
            raise OSError("failure not counted yet")
        if sample(text, "celery_queue_length", queue_name="stylequeue") != 0:
            raise OSError("last ack not in yet")  # the late ack follows the result and task_postrun
        return text

    after = wait_for(counted, timeout_s=30)
    assert delta("celery_task_succeeded_total", after, **task) >= 1
    assert delta("celery_task_failed_total", after, exception="ImageError", **task) >= 1
    assert delta("celery_task_runtime_count", after, **task) >= 2  # celery-exporter's name and labels
    assert delta("stylequeue_job_queue_wait_seconds_count", after) >= 2
    assert sample(after, "stylequeue_model_load_seconds") > 0
    assert sample(after, "celery_queue_length", queue_name="stylequeue") == 0
    assert sample(after, "stylequeue_queue_ready", queue_name="stylequeue", priority="5") == 0
    assert "stylequeue_iterations_per_second" in after and "stylequeue_job_progress_ratio" in after


def test_queue_depth_counts_running_jobs_and_every_priority(client, worker, inputs, stack_env) -> None:
    import redis

    r = redis.Redis.from_url(stack_env["STYLEQUEUE_BROKER_URL"])
    job = client.submit(
        inputs["content.png"], inputs["style.jpg"], "s3://outputs/depth/", {"size": 32, "iterations": 2000}
    )
    queued = [
        client.submit(inputs["content.png"], inputs["style.jpg"], "s3://outputs/depth/", {"size": 32}, priority=p)
        for p in (0, 9)
    ]
    seen = []

    def on_progress(p) -> None:
        if not seen:
            seen.append(depth(r, "stylequeue"))
            proc = subprocess.run(
                [*CLI, "queue"], capture_output=True, text=True, env={**os.environ, **stack_env}, timeout=60
            )
            seen.append(json.loads(proc.stdout))
            job.cancel()
            for q in queued:
                q.cancel()

    with pytest.raises(JobFailed):
        job.wait(timeout=120, on_progress=on_progress)
    d, cli = seen
    assert d.unacked == 1  # the running job: invisible to LLEN
    assert d.ready[0] == 1 and d.ready[9] == 1 and d.total == 3
    assert cli["total"] == 3 and cli["unacked"] == 1 and cli["ready"]["9"] == 1
    for q in queued:
        with pytest.raises(JobFailed, match="JobCancelled"):
            q.wait(timeout=60)


def test_health_command_against_the_running_worker(stack_env, worker) -> None:
    proc = subprocess.run(
        [*CLI, "health", "--ping", "--node", f"w1@{socket.gethostname()}"],
        capture_output=True,
        text=True,
        env={**os.environ, **stack_env},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "answers ping" in proc.stdout and "idle" in proc.stdout and proc.stdout.strip().endswith("healthy")
    proc = subprocess.run(
        [*CLI, "health", "--ping", "--node", "nobody@nowhere"],
        capture_output=True,
        text=True,
        env={**os.environ, **stack_env},
        timeout=60,
    )
    assert proc.returncode == 1 and "UNHEALTHY" in proc.stdout


def test_sigterm_during_a_job_finishes_it(stack_env, inputs, tmp_path) -> None:
    """Warm shutdown: the worker stops taking jobs, finishes the running one, and exits 0."""
    with own_workers(stack_env, tmp_path, "term") as (term, (w,)):
        tiny = {"size": 48, "iterations": 60}
        job = term.submit(inputs["content.png"], inputs["style.jpg"], "s3://outputs/term/", tiny)
        signalled = []

        def on_progress(p) -> None:
            if not signalled:
                signalled.append(p.iteration)
                os.kill(w.proc.pid, signal.SIGTERM)

        result = job.wait(timeout=120, on_progress=on_progress)
        assert signalled and signalled[0] < result.iterations == 60  # it ran to the end after SIGTERM
        assert w.proc.wait(timeout=60) == 0, w.log()


def test_queue_exporter_for_autoscalers(client, stack_env) -> None:
    from producer.client import Client
    from producer.core.settings import Settings
    from producer.devstack import free_port

    env = {**stack_env, "STYLEQUEUE_QUEUE": "stylequeue-export"}
    port = free_port()
    exporter = subprocess.Popen([*CLI, "queue", "--serve", str(port)], env={**os.environ, **env})
    try:
        msg = {"content": "s3://inputs/a.png", "style": "s3://inputs/b.png", "output": "s3://outputs/"}
        Client(Settings.from_env(env)).submit_many([msg, msg], priority=3)
        text = wait_for(lambda: scrape(port))
        assert sample(text, "celery_queue_length", queue_name="stylequeue-export") == 2
        assert sample(text, "stylequeue_queue_ready", queue_name="stylequeue-export", priority="3") == 2
        assert sample(text, "stylequeue_queue_unacked", queue_name="stylequeue-export") == 0
    finally:
        exporter.terminate()
        exporter.wait(30)


def test_dev_stack_runs_a_job_and_stops_cleanly_on_ctrl_c(weights_file, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STYLEQUEUE_")}
    proc = subprocess.Popen(
        [
            *CLI_IN_A_TERMINAL,
            "dev",
            "--dir",
            str(tmp_path),
            "--weights",
            weights_file,
            "--size",
            "32",
            "--iterations",
            "3",
            "--serve",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    out = []
    assert proc.stdout is not None
    for line in proc.stdout:
        out.append(line)
        if line.startswith("press Ctrl-C"):
            break
    text = "".join(out)
    assert "wrote" in text and (tmp_path / "result.png").exists(), text
    # Read on to the end, as a terminal does: a full pipe would block the stack as it stops.
    rest: list[str] = []
    reader = threading.Thread(target=lambda: rest.extend(proc.stdout or ()), daemon=True)
    reader.start()
    broker = text.split("STYLEQUEUE_BROKER_URL=")[1].split()[0]
    # the printed curl line submits a job through the API the dev stack runs
    curl = next(line.strip() for line in out if line.strip().startswith("curl "))
    created = json.loads(subprocess.run(["sh", "-c", curl], capture_output=True, text=True, timeout=30).stdout)
    api = curl.split(" POST ")[1].split("/v1/jobs")[0]
    key = curl.split("Bearer ")[1].split("'")[0]

    def finished() -> bool:
        request = urllib.request.Request(f"{api}/v1/jobs/{created['id']}", headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())["state"] == "SUCCESS"

    wait_for(finished, 120, "the job submitted with curl")
    proc.send_signal(signal.SIGINT)
    bound = 60 + 10 + 10 + 30  # the worker's warm shutdown, then Redis and SeaweedFS stop; 30 s to spare
    try:
        assert proc.wait(timeout=bound) == 130, "".join(rest[-40:])
    except subprocess.TimeoutExpired:
        logs = "".join(f"\n--- {p.name}\n" + p.read_text()[-3000:] for p in sorted(tmp_path.glob("*.log")))
        pytest.fail(f"the dev stack did not stop within {bound} s of Ctrl-C; its logs:{logs}")
    reader.join(10)
    import redis

    with pytest.raises(redis.ConnectionError):  # the dev Redis is gone
        redis.Redis.from_url(broker, socket_timeout=2).ping()
    assert not [p for p in (tmp_path / "health").glob("child-*.json")]  # the worker child cleaned up
