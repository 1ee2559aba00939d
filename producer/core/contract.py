"""The job contract: one JSON object, validated by the producer before sending and by the worker on receipt.

Any Celery client in any language can enqueue a job: send task ``stylequeue.transfer`` to queue
``stylequeue`` with this object as its only positional argument (see ``docs/contract.md``)::

    {
      "version": 1,
      "job_id": "order-1234",
      "content": "s3://photos/in/tubingen.jpg",
      "style": [{"uri": "s3://styles/starry.jpg", "weight": 0.7},
                {"uri": "s3://styles/scream.jpg", "weight": 0.3}],
      "output": "s3://results/stylized/",
      "format": "webp",
      "params": {"size": 768, "iterations": 200}
    }

``style`` may also be one URI or a list of URIs (equal weights). A style object may carry a
``mask``: the URI of a grayscale image over the output, white where that style applies (regional
styles; styles naming the same mask share its region). ``output`` ending in ``/`` is a
prefix: the result goes to ``<prefix><job_id>.<format>``, so a job has exactly one output however
many times it is delivered. The job id and the Celery task id are one id (:meth:`Job.resolve_id`).
Unknown fields, wrong types and out-of-range values are rejected with an
:class:`~producer.core.errors.InvalidJob` naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from producer.core import formats
from producer.core.errors import InvalidJob
from producer.core.params import Params

TASK_NAME = "stylequeue.transfer"
QUEUE = "stylequeue"
#: The contract version this code speaks. Bump it on an incompatible change of the shape.
VERSION = 1

_FIELDS = {"version", "job_id", "content", "style", "output", "format", "params", "submitted_at"}
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
MAX_STYLES = 8


def check_job_id(job_id: Any, field: str = "job_id") -> str:
    """Return ``job_id`` if it is a valid job id.

    A job id is 1-128 of ``A-Z a-z 0-9 . _ -``, starting with a letter or digit, so it is safe in
    Redis keys and object keys; a trailing newline or a ``/`` is refused.

    Raises:
        InvalidJob: naming ``field``.
    """
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise InvalidJob(
            field, f"{job_id!r} is not 1-128 letters, digits, '.', '_' or '-' starting with a letter or digit"[:300]
        )
    return job_id


@dataclass(frozen=True)
class ObjectRef:
    """An object (or, for outputs, a key prefix ending in ``/``) in the object store."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"

    @property
    def is_prefix(self) -> bool:
        """Whether this names a prefix (empty, or ending with ``/``) rather than one object."""
        return self.key == "" or self.key.endswith("/")

    @classmethod
    def parse(cls, uri: Any, field: str, prefix_ok: bool = False) -> ObjectRef:
        """Parse and validate ``s3://bucket/key``.

        Raises:
            InvalidJob: not a string, not ``s3://``, a bad bucket name, or an unsafe key (empty,
                absolute, ``..`` or ``.`` segments, control characters, over 1024 bytes).
        """
        if not isinstance(uri, str):
            raise InvalidJob(field, f"must be an s3:// URI string, got {type(uri).__name__}")
        known = _PARSED.get((uri, prefix_ok))
        if known is not None:
            return known  # a batch names the same images again and again
        if not uri.startswith("s3://"):
            raise InvalidJob(field, f"{uri[:100]!r} is not an s3://bucket/key URI")
        bucket, _, key = uri[5:].partition("/")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise InvalidJob(field, f"{bucket!r} is not a valid bucket name")
        check_key(key, field, prefix_ok)
        ref = cls(bucket, key)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[(uri, prefix_ok)] = ref
        return ref


#: URIs parsed already (valid ones only), so that a batch does not check the same URI again.
_PARSED: dict[tuple[str, bool], ObjectRef] = {}
_PARSED_MAX = 4096


def check_key(key: str, field: str, prefix_ok: bool = False) -> None:
    """Refuse keys that could escape a prefix or confuse stores and file systems."""
    if not key and prefix_ok:
        return  # the bucket's root, as an output prefix
    if not key or (key.endswith("/") and not prefix_ok):
        raise InvalidJob(field, "needs an object key after the bucket")
    if key.startswith("/"):
        raise InvalidJob(field, f"key {key[:100]!r} must not be absolute (start with '/')")
    segments = key.rstrip("/").split("/") if key != "/" else [""]
    if any(s in ("", ".", "..") for s in segments):
        raise InvalidJob(field, f"key {key[:100]!r} has an empty, '.' or '..' path segment")
    if any(ord(c) < 32 or ord(c) == 127 for c in key) or "\\" in key:
        raise InvalidJob(field, "key contains control characters or backslashes")
    if len(key.encode()) > 1024:
        raise InvalidJob(field, "key is longer than 1024 bytes")


@dataclass(frozen=True)
class Job:
    """One style-transfer job, as carried by a message.

    Attributes:
        content: The content image.
        styles: One or more style images.
        style_weights: Blend weights, one per style (``None``: equal).
        output: Where the result goes: an object, or a prefix ending with ``/``.
        params: Engine options.
        job_id: Caller's id; also the Celery task id when sent by this client.
        format: Output format (``png``, ``jpeg``, ``webp``); ``None``: from the output key's
            suffix, else ``png``.
        version: Contract version.
        submitted_at: When the client sent it (Unix epoch seconds), for the queue-wait metric.
        style_masks: One mask per style (``None`` for a style without one), or ``None`` when no
            style has a mask.
    """

    content: ObjectRef
    styles: tuple[ObjectRef, ...]
    output: ObjectRef
    params: Params = Params()
    style_weights: tuple[float, ...] | None = None
    job_id: str | None = None
    format: str | None = None
    version: int = VERSION
    submitted_at: float | None = None
    style_masks: tuple[ObjectRef | None, ...] | None = None

    @classmethod
    def from_message(cls, message: Any) -> Job:
        """Validate a decoded message (a dict, or a JSON string of one) and build the job.

        Raises:
            InvalidJob: naming the first offending field.
        """
        if isinstance(message, (str, bytes)):
            try:
                message = json.loads(message)
            except ValueError as e:
                raise InvalidJob("message", f"is not valid JSON ({e})") from None
        if not isinstance(message, dict):
            raise InvalidJob("message", f"must be a JSON object, got {type(message).__name__}")
        unknown = sorted(set(message) - _FIELDS)
        if unknown:
            raise InvalidJob(unknown[0], f"unknown field (known: {', '.join(sorted(_FIELDS))})")
        version = message.get("version", VERSION)
        if version != VERSION or isinstance(version, bool):
            raise InvalidJob("version", f"unsupported contract version {version!r}; this code speaks {VERSION}")
        for required in ("content", "style", "output"):
            if required not in message:
                raise InvalidJob(required, "is required")
        job_id = message.get("job_id")
        if job_id is not None:
            check_job_id(job_id)
        styles, weights, masks = _parse_styles(message["style"])
        output = ObjectRef.parse(message["output"], "output", prefix_ok=True)
        submitted_at = message.get("submitted_at")
        if submitted_at is not None and (isinstance(submitted_at, bool) or not isinstance(submitted_at, (int, float))):
            raise InvalidJob("submitted_at", f"must be Unix epoch seconds (a number), got {submitted_at!r}")
        fmt = message.get("format")
        named = formats.named(fmt) if isinstance(fmt, str) else None
        if fmt is not None and named is None:
            raise InvalidJob("format", f"{fmt!r} is not png, jpeg or webp")
        job = cls(
            content=ObjectRef.parse(message["content"], "content"),
            styles=styles,
            output=output,
            params=Params.from_dict(message.get("params")),
            style_weights=weights,
            style_masks=masks,
            job_id=job_id,
            format=named.name if named else None,
            submitted_at=float(submitted_at) if submitted_at is not None else None,
        )
        job.output_format()  # a suffix that contradicts "format" is an error now, not at upload
        if job.params.init == "image":
            raise InvalidJob(
                "params.init", "'image' needs an image file: only `stylequeue stylize --init-image` has one"
            )
        return job

    def to_message(self) -> dict[str, Any]:
        """The JSON object to send (what :meth:`from_message` accepts)."""
        masks = None if self.style_masks is None else [m.uri if m is not None else None for m in self.style_masks]
        message: dict[str, Any] = {
            "version": self.version,
            "content": self.content.uri,
            "style": style_field([s.uri for s in self.styles], self.style_weights, masks),
            "output": self.output.uri,
            "params": self.params.to_dict(),
        }
        if self.job_id is not None:
            message["job_id"] = self.job_id
        if self.format is not None:
            message["format"] = self.format
        if self.submitted_at is not None:
            message["submitted_at"] = self.submitted_at
        return message

    @property
    def regions(self) -> int:
        """The regions of a regional-style job, what its memory estimate counts.

        Its distinct masks, a style without one counting as all white (0 without masks).
        """
        if self.style_masks is None:
            return 0
        return len({m.uri if m is not None else None for m in self.style_masks})

    def inputs(self) -> list[tuple[str, ObjectRef]]:
        """Every object the job reads, with the field that names it: the content, the styles, the masks."""
        one = len(self.styles) == 1
        found = [("content", self.content)]
        for i, ref in enumerate(self.styles):
            found.append(("style" if one else f"style[{i}]", ref))
        for i, mask in enumerate(self.style_masks or ()):
            if mask is not None:
                found.append((f"style[{i}].mask", mask))
        return found

    def output_format(self) -> str:
        """The output format: ``format``, else the output key's suffix, else ``png`` (for a prefix).

        Raises:
            InvalidJob: an output key without an image suffix (``.png``, ``.jpg``/``.jpeg``,
                ``.webp``), or one that contradicts ``format``.
        """
        if self.output.is_prefix:
            return self.format or "png"
        by_suffix = formats.of_path(self.output.key)
        if by_suffix is None:
            suffix = formats.suffix_of(self.output.key)
            what = f"suffix {suffix!r}" if suffix else "no suffix"
            raise InvalidJob(
                "output",
                f"key {self.output.key[:100]!r} has {what}: an output key must end in .png, .jpg, .jpeg or .webp",
            )
        if self.format and self.format != by_suffix.name:
            raise InvalidJob(
                "format", f"{self.format!r} contradicts the output key's suffix {formats.suffix_of(self.output.key)!r}"
            )
        return by_suffix.name

    def resolve_id(self, task_id: str) -> str:
        """The job's one id, given the Celery task id it arrived with.

        The message's ``job_id`` and the task id are one id: a message without ``job_id`` takes the
        task id; a message whose ``job_id`` differs from its task id is refused (its state would be
        filed under one id and its lease, output and checkpoint under the other).

        Raises:
            InvalidJob: the ids differ, or the task id is not a valid job id.
        """
        check_job_id(task_id, "task id")
        if self.job_id is not None and self.job_id != task_id:
            raise InvalidJob(
                "job_id", f"{self.job_id!r} differs from the task id {task_id!r}: send the job id as the task id"
            )
        return task_id

    def output_ref(self, job_id: str) -> ObjectRef:
        """The exact output object: the output key, or ``<prefix><job_id>.<ext>`` for a prefix."""
        if not self.output.is_prefix:
            return self.output
        ext = formats.FORMATS[self.output_format()].extension
        return ObjectRef(self.output.bucket, f"{self.output.key}{job_id}.{ext}")

    def check_limits(self, max_size_px: int, max_iterations: int, max_pixels: int | None = None) -> None:
        """Apply the deployment's per-job limits (before any download or computation).

        Args:
            max_size_px: Longest output side allowed.
            max_iterations: Most iterations allowed, every level's counted.
            max_pixels: Most pixels of any image processed: the output and each style image at
                its processed size (output area × ``style_scale``²), counted for the worst case
                (a square output) since the content's aspect ratio is not known yet.

        Raises:
            InvalidJob: naming ``params.size``, ``params.iterations``, ``params.scales``,
                ``params.scale_iterations``, ``params.schedule`` or ``params.style_scale``.
        """
        longest = self.params.longest_px
        if longest > max_size_px:
            raise InvalidJob("params.size", f"{longest} px is over this deployment's limit of {max_size_px}")
        if self.params.schedule == "none" and self.params.iterations > max_iterations:  # a schedule's: below
            raise InvalidJob(
                "params.iterations", f"{self.params.iterations} is over this deployment's limit of {max_iterations}"
            )
        if self.params.most_iterations > max_iterations:  # the coarser levels count too
            field = "params.scale_iterations" if self.params.scale_iterations else "params.scales"
            plan = f"{self.params.scales} levels run"
            if self.params.schedule != "none":
                field, plan = "params.schedule", f"schedule {self.params.schedule!r} runs"
            raise InvalidJob(
                field,
                f"{plan} up to {self.params.most_iterations} iterations in all, over this "
                f"deployment's limit of {max_iterations} (STYLEQUEUE_MAX_ITERATIONS)",
            )
        if max_pixels is None:
            return
        if self.output_pixels > max_pixels:
            raise InvalidJob("params.size", f"{self.output_pixels} output pixels is over the limit of {max_pixels}")
        style_pixels = int(self.output_pixels * self.params.style_scale**2)
        if style_pixels > max_pixels:
            raise InvalidJob(
                "params.style_scale",
                f"style images of {self.params.style_scale}x the output's size ({style_pixels} pixels) are over "
                f"the limit of {max_pixels} pixels (STYLEQUEUE_MAX_PIXELS)",
            )

    @property
    def output_pixels(self) -> int:
        """Pixels of the output at most: ``size``² for a longest side, ``height × width`` for a pair."""
        size = self.params.size
        return size * size if isinstance(size, int) else size[0] * size[1]


def check_message_size(message: Any, max_bytes: int) -> None:
    """Refuse a job message whose JSON is larger than ``max_bytes``.

    Raises:
        InvalidJob: naming ``message``.
    """
    check_size(len(json.dumps(message, separators=(",", ":"), default=str).encode()), max_bytes)


def check_size(size: int, max_bytes: int) -> None:
    """Refuse a job message of ``size`` bytes (its JSON) over ``max_bytes``.

    Raises:
        InvalidJob: naming ``message``.
    """
    if size > max_bytes:
        raise InvalidJob("message", f"{size} bytes is over the limit of {max_bytes} (STYLEQUEUE_MAX_MESSAGE_BYTES)")


def style_field(uris: Sequence[str], weights: Sequence[float] | None, masks: Sequence[str | None] | None) -> Any:
    """The message's ``style``, what :func:`_parse_styles` reads.

    One URI, a list of URIs, or ``{uri, weight, mask}`` objects when there are weights or masks
    (a ``None`` mask left out; masks that are all ``None`` are no masks).

    Raises:
        InvalidJob: not one weight, or one mask, per style.
    """
    for name, values in (("weights", weights), ("masks", masks)):
        if values is not None and len(values) != len(uris):
            raise InvalidJob("style", f"{len(values)} {name} for {len(uris)} style images: one per style")
    if masks is not None and all(m is None for m in masks):
        masks = None  # no mask at all: the message (and its fingerprint) of a job without masks
    if weights is None and masks is None:
        return uris[0] if len(uris) == 1 else list(uris)
    items = []
    for i, uri in enumerate(uris):
        item: dict[str, Any] = {"uri": uri}
        if weights is not None:
            item["weight"] = weights[i]
        if masks is not None and masks[i] is not None:
            item["mask"] = masks[i]
        items.append(item)
    return items


def _parse_styles(
    value: Any,
) -> tuple[tuple[ObjectRef, ...], tuple[float, ...] | None, tuple[ObjectRef | None, ...] | None]:
    if isinstance(value, str):
        return (ObjectRef.parse(value, "style"),), None, None
    if not isinstance(value, list) or not value:
        raise InvalidJob("style", "must be a URI, or a non-empty list of URIs or {uri, weight, mask} objects")
    if len(value) > MAX_STYLES:
        raise InvalidJob("style", f"at most {MAX_STYLES} style images")
    refs: list[ObjectRef] = []
    weights: list[float] = []
    masks: list[ObjectRef | None] = []
    for i, item in enumerate(value):
        field = f"style[{i}]"
        if isinstance(item, str):
            refs.append(ObjectRef.parse(item, field))
            weights.append(1.0)
            masks.append(None)
            continue
        if not isinstance(item, dict) or set(item) - {"uri", "weight", "mask"} or "uri" not in item:
            raise InvalidJob(field, "must be a URI or an object with 'uri' and optional 'weight' and 'mask'")
        refs.append(ObjectRef.parse(item["uri"], f"{field}.uri"))
        w = item.get("weight", 1.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < float("inf"):
            raise InvalidJob(f"{field}.weight", f"must be a finite number >= 0, got {w!r}")
        weights.append(float(w))
        mask = item.get("mask")
        masks.append(None if mask is None else ObjectRef.parse(mask, f"{field}.mask"))
    if sum(weights) <= 0:
        raise InvalidJob("style", "the blend weights must not all be zero")
    explicit = any(isinstance(item, dict) for item in value)
    return (
        tuple(refs),
        tuple(weights) if explicit else None,
        tuple(masks) if any(m is not None for m in masks) else None,
    )
