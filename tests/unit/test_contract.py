import json

import pytest

from producer.core.contract import Job, ObjectRef
from producer.core.errors import InvalidJob

BASE = {"content": "s3://photos/in/a.jpg", "style": "s3://styles/s.png", "output": "s3://results/out/"}


def job(**changes: object) -> Job:
    return Job.from_message({**BASE, **changes})


def test_minimal_job_and_round_trip() -> None:
    j = job(job_id="order-1")
    assert j.content == ObjectRef("photos", "in/a.jpg") and j.styles == (ObjectRef("styles", "s.png"),)
    assert j.output.is_prefix and j.output_format() == "png"
    assert j.output_ref("order-1").uri == "s3://results/out/order-1.png"
    assert Job.from_message(j.to_message()) == j
    assert Job.from_message(json.dumps(j.to_message())) == j  # a JSON string is accepted too


def test_styles_with_masks() -> None:
    """Each style may name a mask; the job lists every object it reads, masks included."""
    j = job(
        style=[
            {"uri": "s3://styles/a.png", "mask": "s3://masks/left.png"},
            {"uri": "s3://styles/b.png", "weight": 2},
            {"uri": "s3://styles/c.png", "mask": "s3://masks/left.png"},
        ]
    )
    assert j.style_masks == (ObjectRef("masks", "left.png"), None, ObjectRef("masks", "left.png"))
    assert j.style_weights == (1.0, 2.0, 1.0)
    assert Job.from_message(j.to_message()) == j
    assert [field for field, _ in j.inputs()] == [
        "content",
        "style[0]",
        "style[1]",
        "style[2]",
        "style[0].mask",
        "style[2].mask",
    ]
    assert job(style=["s3://styles/a.png"]).style_masks is None
    assert [field for field, _ in job().inputs()] == ["content", "style"]


def test_a_job_without_masks_keeps_its_fingerprint() -> None:
    """Checkpoints of jobs sent before masks existed still match (their fingerprint is unchanged)."""
    from worker.runtime.checkpoint import fingerprint

    plain = job(style=[{"uri": "s3://styles/a.png", "weight": 1}])
    masked = job(style=[{"uri": "s3://styles/a.png", "weight": 1, "mask": "s3://masks/m.png"}])
    assert fingerprint(plain) == "d8f1c9bd6ff72e6877329fcb5ec34c94"  # as computed before masks existed
    assert fingerprint(plain) != fingerprint(masked)


def test_a_w2_jobs_fingerprint_holds_its_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """W2's scale is part of its objective: a recalibrated worker neither adopts nor resumes older runs."""
    from worker.nst import losses
    from worker.runtime.checkpoint import fingerprint

    w2 = job(style=["s3://styles/a.png"], params={"style_loss": "w2"})
    gram = job(style=["s3://styles/a.png"], params={"style_loss": "gram"})
    before = fingerprint(w2), fingerprint(gram)
    monkeypatch.setitem(losses.W2_SCALE, "seed", losses.W2_SCALE["seed"] * 2)
    assert fingerprint(w2) != before[0] and fingerprint(gram) == before[1]


def test_styles_with_blend_weights() -> None:
    j = job(style=[{"uri": "s3://styles/a.png", "weight": 0.7}, {"uri": "s3://styles/b.png", "weight": 0.3}])
    assert j.style_weights == (0.7, 0.3) and len(j.styles) == 2
    assert job(style=["s3://styles/a.png", "s3://styles/b.png"]).style_weights is None
    assert Job.from_message(j.to_message()) == j


def test_output_key_and_format() -> None:
    assert job(output="s3://results/x/final.webp").output_format() == "webp"
    assert job(output="s3://results/x/final.JPG").output_ref("id").key == "x/final.JPG"
    assert job(output="s3://results/", format="jpeg").output_ref("id").uri == "s3://results/id.jpg"
    assert job(output="s3://results/x/final.jpeg", format="jpg").format == "jpeg"


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"colour": 1}, "colour", "unknown field"),
        ({"version": 2}, "version", "unsupported contract version 2"),
        ({"version": "1"}, "version", "unsupported contract version"),
        ({"content": None}, "content", "must be an s3:// URI string"),
        ({"content": "http://x/y.png"}, "content", "is not an s3://bucket/key URI"),
        ({"content": "s3://Bad_Bucket/a.png"}, "content", "is not a valid bucket name"),
        ({"content": "s3://photos/"}, "content", "needs an object key"),
        ({"content": "s3://photos//etc/passwd"}, "content", "must not be absolute"),
        ({"content": "s3://photos/a/../../b.png"}, "content", "'..' path segment"),
        ({"content": "s3://photos/a/./b.png"}, "content", "'.' or '..'"),
        ({"content": "s3://photos/a\x00b.png"}, "content", "control characters"),
        ({"content": "s3://photos/" + "k" * 1100}, "content", "longer than 1024 bytes"),
        ({"output": "s3://results/../x/"}, "output", "'..' path segment"),
        ({"output": "s3://results/x.txt"}, "output", "has suffix 'txt'"),
        ({"output": "s3://results/final", "format": "webp"}, "output", "has no suffix"),
        ({"output": "s3://models/vgg19.weights.h5", "format": "png"}, "output", "has suffix 'h5'"),
        ({"output": "s3://results/x.png", "format": "jpeg"}, "format", "contradicts"),
        ({"format": "gif"}, "format", "is not png, jpeg or webp"),
        ({"style": []}, "style", "non-empty list"),
        ({"style": [{"uri": "s3://styles/a.png", "weight": -1}]}, "style[0].weight", "finite number >= 0"),
        ({"style": [{"uri": "s3://styles/a.png", "weight": 0}]}, "style", "must not all be zero"),
        ({"style": [{"url": "s3://styles/a.png"}]}, "style[0]", "'uri' and optional 'weight' and 'mask'"),
        ({"style": [{"uri": "s3://styles/a.png", "mask": "masks/a.png"}]}, "style[0].mask", "s3://"),
        ({"style": [{"uri": "s3://styles/a.png", "mask": 3}]}, "style[0].mask", ""),
        ({"job_id": "has space"}, "job_id", "letters, digits"),
        ({"job_id": "trailing-newline\n"}, "job_id", "letters, digits"),
        ({"job_id": "a/b"}, "job_id", "letters, digits"),
        ({"job_id": "-starts-with-dash"}, "job_id", "letters, digits"),
        ({"params": {"iterations": 0}}, "params.iterations", "out of range"),
        ({"params": {"sizes": 3}}, "params.sizes", "unknown option"),
    ],
)
def test_bad_fields_are_named(changes: dict, field: str, message: str) -> None:
    with pytest.raises(InvalidJob) as err:
        job(**changes)
    assert err.value.field == field, str(err.value)
    assert message in err.value.message


@pytest.mark.parametrize(("message", "field"), [("not json {", "message"), ([1, 2], "message"), ({}, "content")])
def test_bad_messages(message: object, field: str) -> None:
    with pytest.raises(InvalidJob) as err:
        Job.from_message(message)
    assert err.value.field == field


def test_per_job_limits() -> None:
    j = job(params={"size": 1024, "iterations": 500})
    j.check_limits(max_size_px=1024, max_iterations=500, max_pixels=1024 * 1024)
    with pytest.raises(InvalidJob, match="params.size: 1024 px is over this deployment's limit of 512"):
        j.check_limits(max_size_px=512, max_iterations=500)
    with pytest.raises(InvalidJob, match="params.iterations: 500 is over"):
        j.check_limits(max_size_px=1024, max_iterations=100)
    with pytest.raises(InvalidJob, match="params.size: 1048576 output pixels is over the limit of 1000000"):
        j.check_limits(max_size_px=1024, max_iterations=500, max_pixels=1_000_000)


def test_style_pixels_count_against_the_pixel_limit() -> None:
    """A style image is processed at the output's area times style_scale²: that is what is bounded."""
    small = job(params={"size": [100, 200], "style_scale": 3.0})
    small.check_limits(4096, 100, max_pixels=200_000)  # 20,000 output px, 180,000 style px
    with pytest.raises(InvalidJob) as err:
        small.check_limits(4096, 100, max_pixels=150_000)
    assert err.value.field == "params.style_scale" and "180000 pixels" in err.value.message


def test_the_job_id_and_the_task_id_are_one_id() -> None:
    assert job().resolve_id("task-1") == "task-1"  # no job_id: the task id is the job id
    assert job(job_id="order-1").resolve_id("order-1") == "order-1"
    with pytest.raises(InvalidJob, match="'order-1' differs from the task id 'other'") as err:
        job(job_id="order-1").resolve_id("other")
    assert err.value.field == "job_id"
    for bad in ("with\nnewline", "a/b", "", "x" * 129):
        with pytest.raises(InvalidJob) as err:
            job().resolve_id(bad)
        assert err.value.field == "task id"


def test_message_size_limit() -> None:
    from producer.core.contract import check_message_size

    message = {**BASE, "params": {"content_layers": ["block1_conv1"] * 50}}
    check_message_size(message, 10_000)
    with pytest.raises(InvalidJob, match="bytes is over the limit of 100 .STYLEQUEUE_MAX_MESSAGE_BYTES."):
        check_message_size(message, 100)


def test_the_iteration_limit_counts_every_level() -> None:
    """``scales`` × ``scale_iterations`` counts too: 10 + 7 × 100,000 is not 10."""
    base = {"content": "s3://photos/c.png", "style": "s3://photos/s.png", "output": "s3://results/o/", "job_id": "j"}
    job = Job.from_message({**base, "params": {"iterations": 10, "scales": 8, "scale_iterations": 100_000}})
    assert job.params.most_iterations == 700_010
    with pytest.raises(InvalidJob, match=r"params.scale_iterations: 8 levels run up to 700010 iterations"):
        job.check_limits(2048, 2000)
    plain = Job.from_message({**base, "params": {"iterations": 500, "scales": 5}})  # coarse levels default to 500
    with pytest.raises(InvalidJob, match=r"params.scales: 5 levels run up to 2500"):
        plain.check_limits(2048, 2000)
    Job.from_message({**base, "params": {"iterations": 500, "scales": 4}}).check_limits(2048, 2000)
