"""Object store access through boto3, for AWS S3 and any S3-compatible store (SeaweedFS, MinIO, ...).

Every boto3/botocore failure is translated into the error tree, which decides retries:
missing objects and buckets, denied access and other 4xx answers are permanent; timeouts,
connection errors, throttling and 5xx answers are :class:`~producer.core.errors.StoreUnavailable`.
boto3 itself retries a few times first (``standard`` retry mode). Credentials come from the
standard AWS chain and are never logged.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producer.core.contract import ObjectRef
from producer.core.digest import sha256_file
from producer.core.errors import (
    BucketNotAllowed,
    ImageError,
    ObjectNotFound,
    PermanentError,
    StoreUnavailable,
    StylequeueError,
    WeightsError,
    WriteConflict,
)
from producer.core.settings import Settings

log = logging.getLogger(__name__)

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NotFound", "404"}
_CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict", "412"}
_DENIED = {"AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "ServiceUnavailable",
    "InternalError",
    "RequestLimitExceeded",
    "503",
    "500",
}


def make_client(settings: Settings, probe_timeout_s: float | None = None, **credentials: str) -> Any:
    """A boto3 S3 client for ``settings``.

    Path-style addressing, standard retries, and checksums only where required (stores other than
    AWS reject or lack the newer default checksums). ``credentials`` (``aws_access_key_id``, ...)
    override the standard AWS chain; leave them out in production. ``probe_timeout_s`` makes a
    client for health checks: that timeout, one attempt.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"},
        retries={"mode": "standard", "max_attempts": 1 if probe_timeout_s else 3},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=probe_timeout_s or 5,
        read_timeout=probe_timeout_s or 60,
        signature_version="s3v4",
    )
    return boto3.client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region, config=config, **credentials
    )


@dataclass(frozen=True)
class StoredObject:
    """An object read from the store, with what conditional writes and adoption need.

    Attributes:
        data: Its bytes (empty for :meth:`Store.stat`).
        etag: Its ETag, for ``If-Match``.
        metadata: Its user metadata (``x-amz-meta-*``, keys lower case).
        size: Its size in bytes.
        content_type: Its ``Content-Type``.
    """

    data: bytes
    etag: str
    metadata: dict[str, str] = field(default_factory=dict)
    size: int = 0
    content_type: str = ""


class Store:
    """Reads and writes objects, translating every store error into the error tree.

    Which objects jobs may touch is decided before any I/O (:mod:`producer.core.access`), not here: the
    worker also reads the model's weights, which jobs may not name.

    Args:
        settings: Endpoint, region, and whether the store takes conditional writes.
        client: A boto3 S3 client (built from ``settings`` when ``None``).
    """

    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.settings = settings
        self.client = client if client is not None else make_client(settings)

    def get(self, ref: ObjectRef, max_bytes: int | None = None) -> bytes:
        """Download one object into memory.

        Raises:
            ObjectNotFound, BucketNotAllowed, StoreUnavailable, PermanentError; ImageError when
            the object is larger than ``max_bytes``.
        """
        return self.read(ref, max_bytes).data

    def read(self, ref: ObjectRef, max_bytes: int | None = None) -> StoredObject:
        """Download one object with its ETag and metadata; errors as :meth:`get`."""
        with _translated(ref, "get"):
            obj = self.client.get_object(Bucket=ref.bucket, Key=ref.key)
            size = int(obj.get("ContentLength") or 0)
            if max_bytes is not None and size > max_bytes:
                obj["Body"].close()
                raise ImageError(f"{ref.uri}: {size} bytes is over the limit of {max_bytes}")
            data: bytes = obj["Body"].read()
            return StoredObject(
                data, obj.get("ETag", ""), dict(obj.get("Metadata") or {}), size, obj.get("ContentType", "")
            )

    def stat(self, ref: ObjectRef) -> StoredObject | None:
        """The object's ETag, metadata and size without its bytes, or ``None`` when it does not exist."""
        try:
            head = self.head(ref)
        except ObjectNotFound:
            return None
        return StoredObject(
            b"",
            head.get("ETag", ""),
            dict(head.get("Metadata") or {}),
            int(head.get("ContentLength") or 0),
            head.get("ContentType", ""),
        )

    def put(
        self,
        ref: ObjectRef,
        data: bytes,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        """Upload one object; return its ETag.

        Args:
            ref: Where.
            data: The bytes.
            content_type: Its ``Content-Type``.
            metadata: User metadata (``x-amz-meta-*``).
            if_none_match: Only create it: fail if an object exists at the key.
            if_match: Only replace the object whose ETag this is.

        Raises:
            WriteConflict: the condition did not hold (someone else wrote the key). Conditions
                are sent only with ``STYLEQUEUE_S3_CONDITIONAL_WRITES`` on (the default).
        """
        extra: dict[str, str] = {}
        if self.settings.s3_conditional_writes:
            if if_none_match:
                extra["IfNoneMatch"] = "*"
            elif if_match is not None:
                extra["IfMatch"] = if_match
        with _translated(ref, "put"):
            response = self.client.put_object(
                Bucket=ref.bucket,
                Key=ref.key,
                Body=data,
                ContentType=content_type,
                Metadata=dict(metadata or {}),
                **extra,
            )
            return str(response.get("ETag", ""))

    def head(self, ref: ObjectRef) -> dict[str, Any]:
        """Return the object's metadata (``ContentType``, ``ContentLength``, ``Metadata``, ...)."""
        with _translated(ref, "head"):
            head: dict[str, Any] = self.client.head_object(Bucket=ref.bucket, Key=ref.key)
            return head

    def delete(self, ref: ObjectRef) -> None:
        """Delete one object; deleting a missing object is not an error."""
        with _translated(ref, "delete"):
            self.client.delete_object(Bucket=ref.bucket, Key=ref.key)

    def upload_file(self, path: str | os.PathLike[str], ref: ObjectRef, content_type: str | None = None) -> None:
        """Upload a local file (multipart for large files)."""
        extra = {"ContentType": content_type} if content_type else None
        with _translated(ref, "upload"):
            self.client.upload_file(str(path), ref.bucket, ref.key, ExtraArgs=extra)

    def fetch_cached(self, ref: ObjectRef, cache_dir: str | os.PathLike[str], sha256: str | None = None) -> Path:
        """Download ``ref`` once into ``cache_dir`` and return the local path.

        A cached file is reused when it matches ``sha256`` (or when no sha256 is given). The
        download goes to a temporary file renamed into place, so concurrent workers never see a
        partial file.

        Raises:
            WeightsError: the downloaded file does not match ``sha256``; store errors as :meth:`get`.
        """
        target = Path(cache_dir).expanduser() / ref.bucket / ref.key
        if target.is_file() and (sha256 is None or sha256_file(target) == sha256.lower()):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
        os.close(fd)
        try:
            with _translated(ref, "download"):
                self.client.download_file(ref.bucket, ref.key, tmp)
            if sha256 is not None and (actual := sha256_file(tmp)) != sha256.lower():
                raise WeightsError(f"{ref.uri} has sha256 {actual}, expected {sha256}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        log.info("downloaded %s to %s", ref.uri, target)
        return target


@contextmanager
def _translated(ref: ObjectRef, action: str) -> Iterator[None]:
    """Turn boto3/botocore exceptions raised inside into the error tree."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except StylequeueError:
        raise
    except ClientError as e:
        error = e.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = f"{ref.uri}: {action} failed: {code or status} {error.get('Message', '')}".strip()
        if code in _CONFLICT or status == 412:
            raise WriteConflict(
                f"{ref.uri}: {action} refused: the object changed meanwhile ({code or status})"
            ) from None
        if code in _NOT_FOUND or status == 404:
            what = "no such bucket" if code == "NoSuchBucket" else "no such object"
            raise ObjectNotFound(f"{ref.uri}: {what}") from None
        if code in _DENIED or status == 403:
            raise BucketNotAllowed(f"{ref.uri}: access denied ({action})") from None
        if code in _TRANSIENT or status >= 500 or status == 429:
            raise StoreUnavailable(message) from None
        raise PermanentError(message) from None
    except NoCredentialsError:
        raise PermanentError(
            f"{ref.uri}: no S3 credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an instance role)"
        ) from None
    except (BotoCoreError, ConnectionError, TimeoutError) as e:
        # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError, ...
        raise StoreUnavailable(f"{ref.uri}: {action} failed: {type(e).__name__}: {e}") from None
