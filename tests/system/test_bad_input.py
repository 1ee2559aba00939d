"""Bad input through the real worker: each a clear, permanent error; the worker serves on."""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.images import png_bytes, random_rgb
from support.outcomes import expect_permanent
from support.processes import own_workers
from support.store import WEIGHTS_URI
from support.waiting import wait_for

from producer.core.contract import TASK_NAME, ObjectRef

pytestmark = pytest.mark.slow

GOOD = {"size": 32, "iterations": 2}


def _bomb() -> bytes:
    png = png_bytes(np.zeros((16, 16), np.uint8))
    i = png.index(b"IHDR")
    ihdr = bytearray(png[i : i + 17])
    ihdr[4:12] = struct.pack(">II", 50_000, 50_000)
    return png[:i] + bytes(ihdr) + struct.pack(">I", zlib.crc32(bytes(ihdr))) + png[i + 21 :]


def _encoded(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def _gif() -> bytes:
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 0, 255))]
    return _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


JPEG = png_bytes(random_rgb(64, 64, 4), fmt="JPEG")
OBJECTS = {
    "empty": (b"", "empty file (0 bytes)"),
    "truncated": (JPEG[: len(JPEG) // 2], "truncated or corrupt JPEG"),
    "bomb": (_bomb(), "2500000000 pixels exceeds the limit"),
    "one-pixel": (png_bytes(np.zeros((1, 1, 3), np.uint8)), "1x1 is too small"),
    "sliver": (png_bytes(np.zeros((10, 400, 3), np.uint8)), "aspect ratio exceeds"),
}


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_bad_image_objects(client, worker, store, inputs, name) -> None:
    data, fragment = OBJECTS[name]
    ref = ObjectRef("inputs", f"bad/{name}.img")
    store.put(ref, data, "application/octet-stream")
    job = client.submit(ref.uri, inputs["style.jpg"], "s3://outputs/bad/", GOOD)
    expect_permanent(client, job.id, "ImageError", fragment)


@pytest.mark.parametrize("name", ["16-bit.png", "cmyk.jpg", "animated.gif"])
def test_unusual_but_valid_images_are_accepted(client, worker, store, inputs, name) -> None:
    data = {
        "16-bit.png": _encoded(Image.fromarray(np.full((40, 40), 30000, np.uint16)), "PNG"),
        "cmyk.jpg": _encoded(Image.fromarray(random_rgb(40, 40, 5)).convert("CMYK"), "JPEG"),
        "animated.gif": _gif(),
    }[name]
    ref = ObjectRef("inputs", f"unusual/{name}")
    store.put(ref, data, "application/octet-stream")
    assert client.submit(ref.uri, inputs["style.jpg"], "s3://outputs/unusual/", GOOD).wait(timeout=120).width == 32


BASE = {"content": "s3://inputs/test/content.png", "style": "s3://inputs/test/style.jpg", "output": "s3://outputs/raw/"}
RAW = {
    "dotdot-key": ({**BASE, "content": "s3://inputs/a/../../etc/passwd"}, "content: key", "'..' path segment"),
    "absolute-key": ({**BASE, "content": "s3://inputs//etc/passwd"}, "content: key", "must not be absolute"),
    "negative-iterations": ({**BASE, "params": {"iterations": -5}}, "params.iterations", "out of range"),
    "size-zero": ({**BASE, "params": {"size": 0}}, "params.size", "out of range"),
    "size-over-limit": ({**BASE, "params": {"size": 4096}}, "params.size", "over this deployment's limit of 2048"),
    "unknown-option": ({**BASE, "params": {"sharpness": 3}}, "params.sharpness", "unknown option"),
    "not-an-object": ([1, 2, 3], "message", "must be a JSON object"),
    "json-text-not-json": ("{not json", "message", "is not valid JSON"),
    "wrong-version": ({**BASE, "version": 99}, "version", "unsupported contract version 99"),
    # The attack that replaced the model with a PNG: an output key whose suffix is not the format's.
    "output-is-the-weights": ({**BASE, "output": WEIGHTS_URI, "format": "png"}, "output", "has suffix 'h5'"),
    "job-id-differs-from-task-id": ({**BASE, "job_id": "someone-else"}, "job_id", "differs from the task id"),
    "style-scale-over-the-pixel-limit": (
        {**BASE, "params": {"size": 2048, "style_scale": 10.0}},
        "params.style_scale",
        "over the limit of 50000000 pixels",
    ),
    "message-over-the-size-limit": (
        {**BASE, "params": {"style_layers": ["block1_conv1"] * 6000}},
        "message",
        "over the limit of 65536",
    ),
}


@pytest.mark.parametrize("name", sorted(RAW))
def test_messages_breaking_the_contract(client, worker, name) -> None:
    """Sent with plain send_task (no client-side validation), as another language's client might."""
    message, field, fragment = RAW[name]
    job_id = uuid.uuid4().hex
    client.app.send_task(TASK_NAME, args=[message], task_id=job_id, queue="stylequeue", priority=5)
    expect_permanent(client, job_id, "InvalidJob", fragment)
    assert client.job(job_id).error().error_message.startswith(field)


class _Evil:
    """Unpickling this would create a file: proof of whether a pickle was ever deserialized."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _raw_publish(client, body: bytes, content_type: str, job_id: str) -> None:
    headers = {
        "lang": "py",
        "task": TASK_NAME,
        "id": job_id,
        "root_id": job_id,
        "parent_id": None,
        "group": None,
        "argsrepr": "",
        "kwargsrepr": "",
        "origin": "test",
        "retries": 0,
    }
    with client.app.connection_for_write() as conn:
        conn.Producer().publish(
            body,
            routing_key="stylequeue",
            exchange="",
            content_type=content_type,
            content_encoding="binary" if "pickle" in content_type else "utf-8",
            headers=headers,
            priority=5,
            serializer=None,
        )


def test_pickle_message_is_refused_and_never_executed(client, worker, inputs, tmp_path) -> None:
    marker = tmp_path / "unpickled"
    job_id = uuid.uuid4().hex
    _raw_publish(client, pickle.dumps(((_Evil(marker),), {}, {})), "application/x-python-serialize", job_id)
    expect_permanent(client, job_id, "InvalidJob", "refused: ContentDisallowed")
    assert not marker.exists()
    assert client.submit(inputs["content.png"], inputs["style.jpg"], "s3://outputs/after/", GOOD).wait(timeout=120)


def test_body_that_is_not_json_is_dropped_without_a_loop(client, worker, inputs, stack_env) -> None:
    import redis

    from producer.broker.queues import depth

    job_id = uuid.uuid4().hex
    _raw_publish(client, b"{this is not json", "application/json", job_id)
    after = client.submit(inputs["content.png"], inputs["style.jpg"], "s3://outputs/after/", GOOD)
    assert after.wait(timeout=120)  # the worker took the bad message first (FIFO) and serves on
    r = redis.Redis.from_url(stack_env["STYLEQUEUE_BROKER_URL"])

    def drained() -> bool:  # the late ack of `after` lands just after its result: wait for it
        if depth(r, "stylequeue").total:
            raise OSError("queue not drained yet")
        return True

    assert wait_for(drained, timeout_s=30)  # nothing left, nothing redelivered


def test_credentials_are_never_logged_or_stored(client, worker, inputs, stack_env) -> None:
    import redis

    client.submit(inputs["content.png"], inputs["style.jpg"], "s3://outputs/creds/", GOOD).wait(timeout=120)
    secret = stack_env["AWS_SECRET_ACCESS_KEY"]
    assert secret not in worker.log_path.read_text(errors="replace")
    r = redis.Redis.from_url(stack_env["STYLEQUEUE_BROKER_URL"])
    readers = {
        b"string": lambda k: [r.get(k)],
        b"hash": r.hvals,
        b"list": lambda k: r.lrange(k, 0, -1),
        b"zset": lambda k: r.zrange(k, 0, -1),
        b"set": lambda k: list(r.smembers(k)),
    }
    for key in r.scan_iter(count=1000):
        values = readers.get(r.type(key), lambda k: [])(key)
        assert not any(secret.encode() in (v or b"") for v in values), key


def test_redis_auth(stack_env, inputs, tmp_path) -> None:
    """Broker and backend behind Redis AUTH: redis://:password@host URLs work end to end."""
    from producer.devstack import RedisServer

    server = RedisServer(tmp_path / "redis", password="s3cr3t-pw").start()
    try:
        with own_workers(stack_env, tmp_path, "auth", STYLEQUEUE_BROKER_URL=server.url) as (client, (w,)):
            result = client.submit(inputs["content.png"], inputs["style.jpg"], "s3://outputs/auth/", GOOD).wait(
                timeout=120
            )
            assert result.width == 32
            assert "s3cr3t-pw" not in w.log()  # Celery masks the password in its banner
    finally:
        server.stop()


def test_jobs_never_write_outside_the_output_buckets_nor_over_foreign_objects(client, worker, store, inputs) -> None:
    """Write isolation: an input bucket is not writable, and an existing object that stylequeue did
    not write (a photo, the model) is never overwritten; the weights stay intact."""
    weights_before = hashlib.sha256(store.get(ObjectRef("models", "vgg19/random.weights.h5"))).hexdigest()
    in_inputs = client.app.send_task(
        TASK_NAME,
        args=[{**BASE, "output": "s3://inputs/test/content.png"}],
        task_id=uuid.uuid4().hex,
        queue="stylequeue",
    )
    expect_permanent(
        client,
        in_inputs.id,
        "BucketNotAllowed",
        "outside the buckets jobs may write (STYLEQUEUE_OUTPUT_BUCKETS=outputs)",
    )

    foreign = ObjectRef("outputs", "foreign/photo.png")
    store.put(foreign, b"a file someone else keeps here", "image/png")
    over = client.submit(inputs["content.png"], inputs["style.jpg"], foreign.uri, GOOD)
    expect_permanent(client, over.id, "InvalidJob", "exists and was not written by stylequeue")
    assert store.get(foreign) == b"a file someone else keeps here"
    assert hashlib.sha256(store.get(ObjectRef("models", "vgg19/random.weights.h5"))).hexdigest() == weights_before


def test_a_job_too_large_for_the_worker_is_refused_before_any_work(stack_env, inputs, tmp_path) -> None:
    """Refused with the size it needs, never run (so never OOM-killed and redelivered); the worker serves on."""
    with own_workers(stack_env, tmp_path, "small", STYLEQUEUE_MAX_JOB_MEMORY_BYTES=str(3 * 2**20)) as (small, (w,)):
        big = small.submit(
            inputs["content.png"], inputs["style.jpg"], "s3://outputs/small/", {"size": 48, "iterations": 2}
        )
        expect_permanent(small, big.id, "InvalidJob", "this job needs about 11 MiB and a worker here allows 3 MiB")
        assert not w.events("job_done", big.id) and not small.redis.exists(f"stylequeue:runs:{big.id}")
        ok = small.submit(
            inputs["content.png"], inputs["style.jpg"], "s3://outputs/small/", {"size": [16, 16], "iterations": 2}
        )
        assert ok.wait(timeout=120).width == 16
