"""Regional styles through the real worker: masks read from the store (identities on), each style
where its mask is white; bad masks end the job FAILED with an error naming the mask."""

from __future__ import annotations

import numpy as np
import pytest
from support.images import png_bytes
from support.outcomes import expect_permanent

from producer.core.contract import ObjectRef
from worker.nst import images

pytestmark = pytest.mark.slow

PARAMS = {"size": 32, "iterations": 3, "precision": "float32"}
#: Style alone (no content, no smoothness), so that the styles make the results differ.
STYLE_ONLY = {**PARAMS, "iterations": 5, "content_weight": 0.0, "tv_weight": 0.0}


def put_mask(store, name: str, pixels: np.ndarray) -> str:
    ref = ObjectRef("inputs", f"masks/{name}.png")
    store.put(ref, png_bytes(pixels), "image/png")
    return ref.uri


@pytest.fixture(scope="module")
def halves(store) -> dict[str, str]:
    """White-left, white-right, all-white and all-black masks of the content's aspect (4:3)."""
    left = np.zeros((24, 32), np.uint8)
    left[:, :16] = 255
    return {
        "left": put_mask(store, "left", left),
        "right": put_mask(store, "right", 255 - left),
        "white": put_mask(store, "white", np.full((24, 32), 255, np.uint8)),
        "black": put_mask(store, "black", np.zeros((24, 32), np.uint8)),
    }


def output(client, store, job) -> np.ndarray:
    result = job.wait(timeout=180)
    return images.load(store.get(ObjectRef.parse(result.output, "output"))).astype(np.int16)


def test_each_style_applies_where_its_mask_is_white(client, worker, store, inputs, halves) -> None:
    """A black mask removes its style: [black, white] gives the second style's result alone (the
    same objective: the images differ by rounding only, L-BFGS amplifying float32's last bits); a
    split mask gives neither single-style result."""
    styles = [inputs["style.jpg"], inputs["style2.png"]]
    content, to = inputs["content.png"], "s3://outputs/masks/"
    only_second = output(client, store, client.submit(content, styles[1], to, STYLE_ONLY))
    only_first = output(client, store, client.submit(content, styles[0], to, STYLE_ONLY))
    removed = client.submit(content, styles, to, STYLE_ONLY, style_masks=[halves["black"], halves["white"]])
    split = client.submit(content, styles, to, STYLE_ONLY, style_masks=[halves["left"], halves["right"]])
    removed_out, split_out = output(client, store, removed), output(client, store, split)

    def apart(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b).mean())

    print(
        apart(removed_out, only_second),
        apart(removed_out, only_first),
        apart(split_out, only_second),
        apart(split_out, only_first),
    )
    assert apart(removed_out, only_second) < 0.25 * apart(removed_out, only_first)
    assert min(apart(split_out, only_second), apart(split_out, only_first)) > 2 * apart(removed_out, only_second)


@pytest.mark.parametrize(
    ("mask", "error_type", "fragment"),
    [
        ("not-an-image", "ImageError", "s3://inputs/test/not-an-image.jpg: not an image"),
        ("square", "ImageError", "style[0].mask: 32x32 px does not have the content image's aspect ratio"),
        ("black", "ImageError", "style[0].mask: every mask is black everywhere"),
        ("missing", "ObjectNotFound", "s3://inputs/masks/missing.png"),
    ],
)
def test_bad_masks_fail_the_job_naming_the_mask(
    client, worker, store, inputs, halves, mask, error_type, fragment
) -> None:
    uris = {
        "not-an-image": inputs["not-an-image.jpg"],
        "square": put_mask(store, "square", np.full((32, 32), 255, np.uint8)),
        "black": halves["black"],
        "missing": "s3://inputs/masks/missing.png",
    }
    job = client.submit(
        inputs["content.png"], [inputs["style.jpg"]], "s3://outputs/masks/", PARAMS, style_masks=[uris[mask]]
    )
    expect_permanent(client, job.id, error_type, fragment)


def test_a_plain_celery_client_sends_masks_as_the_contract_says(
    client, worker, store, stack_env, inputs, halves
) -> None:
    """docs/contract.md's message from a Celery app with nothing of stylequeue: a style object with
    a "mask". Its black mask removes that style, as through our own client."""
    import uuid

    from celery import Celery

    url = stack_env["STYLEQUEUE_BROKER_URL"]
    app = Celery(broker=url, backend=url)
    job_id = uuid.uuid4().hex
    message = {
        "job_id": job_id,
        "content": inputs["content.png"],
        "style": [
            {"uri": inputs["style.jpg"], "mask": halves["black"]},
            {"uri": inputs["style2.png"], "mask": halves["white"]},
        ],
        "output": "s3://outputs/masks/",
        "params": STYLE_ONLY,
    }
    sent = app.send_task("stylequeue.transfer", args=[message], task_id=job_id, queue="stylequeue")
    result = sent.get(timeout=180)
    theirs = images.load(store.get(ObjectRef.parse(result["output"], "output"))).astype(np.int16)
    ours = output(
        client, store, client.submit(inputs["content.png"], inputs["style2.png"], "s3://outputs/masks/", STYLE_ONLY)
    )
    only_first = output(
        client, store, client.submit(inputs["content.png"], inputs["style.jpg"], "s3://outputs/masks/", STYLE_ONLY)
    )
    assert np.abs(theirs - ours).mean() < 0.25 * np.abs(theirs - only_first).mean()
