"""Error translation of the storage layer, with a small in-memory fake of the boto3 client."""

from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from producer.core.contract import ObjectRef
from producer.core.digest import sha256_file
from producer.core.errors import (
    BucketNotAllowed,
    ObjectNotFound,
    PermanentError,
    StoreUnavailable,
    WeightsError,
    WriteConflict,
)
from producer.core.settings import Settings
from producer.storage import Store

REF = ObjectRef("photos", "a.png")


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "msg"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )


class FakeS3:
    def __init__(self, exc: BaseException | None = None, data: bytes = b"abc") -> None:
        self.exc, self.data, self.calls = exc, data, 0

    def get_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803
        self.calls += 1
        if self.exc:
            raise self.exc
        return {
            "ContentLength": len(self.data),
            "Body": type("B", (), {"read": lambda s: self.data, "close": lambda s: None})(),
        }

    def download_file(self, bucket: str, key: str, path: str) -> None:
        with open(path, "wb") as f:
            f.write(self.data)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (client_error("NoSuchKey", 404), ObjectNotFound),
        (client_error("NoSuchBucket", 404), ObjectNotFound),
        (client_error("AccessDenied", 403), BucketNotAllowed),
        (client_error("SlowDown", 503), StoreUnavailable),
        (client_error("InternalError", 500), StoreUnavailable),
        (client_error("TooManyRequests", 429), StoreUnavailable),
        (client_error("InvalidRange", 416), PermanentError),
        (client_error("PreconditionFailed", 412), WriteConflict),
        (EndpointConnectionError(endpoint_url="http://s3:9000"), StoreUnavailable),
        (ReadTimeoutError(endpoint_url="http://s3:9000"), StoreUnavailable),
    ],
)
def test_errors_are_translated(exc: BaseException, kind: type) -> None:
    with pytest.raises(kind) as err:
        Store(Settings(), FakeS3(exc)).get(REF)
    assert "s3://photos/a.png" in str(err.value)
    assert err.value.retryable is (kind is StoreUnavailable)


def test_size_limit() -> None:
    from producer.core.errors import ImageError

    with pytest.raises(ImageError, match="3 bytes is over the limit of 2"):
        Store(Settings(), FakeS3()).get(REF, max_bytes=2)


def test_fetch_cached_checks_sha256_and_reuses(tmp_path: Path) -> None:
    import hashlib

    fake = FakeS3(data=b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    path = Store(Settings(), fake).fetch_cached(ObjectRef("models", "v/w.h5"), tmp_path, good)
    assert path.read_bytes() == b"weights" and sha256_file(path) == good
    fake.data = b"changed"  # cached file is reused: no second download
    assert Store(Settings(), fake).fetch_cached(ObjectRef("models", "v/w.h5"), tmp_path, good) == path
    with pytest.raises(WeightsError, match="expected 00"):
        Store(Settings(), FakeS3(data=b"x")).fetch_cached(ObjectRef("models", "other.h5"), tmp_path, "00" * 32)
    assert not list((tmp_path / "models").glob(".partial-*"))
