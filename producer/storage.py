"""Object store access through boto3, for AWS S3 and any S3-compatible store (SeaweedFS, MinIO, ...).

Every boto3/botocore failure is translated into the error tree, which decides retries:
missing objects and buckets, denied access and other 4xx answers are permanent; timeouts,
connection errors, throttling and 5xx answers are :class:`~producer.errors.StoreUnavailable`.
boto3 itself retries a few times first (``standard`` retry mode). Credentials come from the
standard AWS chain and are never logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from producer.contract import ObjectRef
from producer.errors import (
    BucketNotAllowed,
    ImageError,
    ObjectNotFound,
    PermanentError,
    StoreUnavailable,
    StylequeueError,
    WeightsError,
)
from producer.settings import Settings

log = logging.getLogger(__name__)

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NotFound", "404"}
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


def make_client(settings: Settings, **credentials: str) -> Any:
    """A boto3 S3 client for ``settings``.

    Path-style addressing, standard retries, and checksums only where required (stores other than
    AWS reject or lack the newer default checksums). ``credentials`` (``aws_access_key_id``, ...)
    override the standard AWS chain; leave them out in production.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"},
        retries={"mode": "standard", "max_attempts": 3},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=5,
        read_timeout=60,
        signature_version="s3v4",
    )
    return boto3.client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region, config=config, **credentials
    )


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Store:
    """Reads and writes objects, enforcing the bucket allowlist.

    Args:
        settings: Endpoint, region and allowlist.
        client: A boto3 S3 client (built from ``settings`` when ``None``).
    """

    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.settings = settings
        self.client = client if client is not None else make_client(settings)

    def check_allowed(self, ref: ObjectRef, field: str = "") -> None:
        """Raise :class:`BucketNotAllowed` unless the allowlist admits ``ref``'s bucket."""
        if not self.settings.bucket_allowed(ref.bucket):
            where = f"{field}: " if field else ""
            raise BucketNotAllowed(f"{where}bucket {ref.bucket!r} is not in STYLEQUEUE_ALLOWED_BUCKETS")

    def get(self, ref: ObjectRef, max_bytes: int | None = None) -> bytes:
        """Download one object into memory.

        Raises:
            ObjectNotFound, BucketNotAllowed, StoreUnavailable, PermanentError; ImageError when
            the object is larger than ``max_bytes``.
        """
        self.check_allowed(ref)
        with _translated(ref, "get"):
            obj = self.client.get_object(Bucket=ref.bucket, Key=ref.key)
            size = int(obj.get("ContentLength") or 0)
            if max_bytes is not None and size > max_bytes:
                obj["Body"].close()
                raise ImageError(f"{ref.uri}: {size} bytes is over the limit of {max_bytes}")
            data: bytes = obj["Body"].read()
            return data

    def put(self, ref: ObjectRef, data: bytes, content_type: str, metadata: Mapping[str, str] | None = None) -> None:
        """Upload one object (overwriting any object at the same key)."""
        self.check_allowed(ref)
        with _translated(ref, "put"):
            self.client.put_object(
                Bucket=ref.bucket, Key=ref.key, Body=data, ContentType=content_type, Metadata=dict(metadata or {})
            )

    def head(self, ref: ObjectRef) -> dict[str, Any]:
        """Return the object's metadata (``ContentType``, ``ContentLength``, ``Metadata``, ...)."""
        self.check_allowed(ref)
        with _translated(ref, "head"):
            head: dict[str, Any] = self.client.head_object(Bucket=ref.bucket, Key=ref.key)
            return head

    def delete(self, ref: ObjectRef) -> None:
        """Delete one object; deleting a missing object is not an error."""
        self.check_allowed(ref)
        with _translated(ref, "delete"):
            self.client.delete_object(Bucket=ref.bucket, Key=ref.key)

    def upload_file(self, path: str | os.PathLike[str], ref: ObjectRef, content_type: str | None = None) -> None:
        """Upload a local file (multipart for large files)."""
        self.check_allowed(ref)
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
        self.check_allowed(ref)
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
