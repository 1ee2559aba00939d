"""Separate allowlists for what jobs read and where they write; the weights are never an output."""

import pytest

from producer.core.access import admits, check_job, check_read, check_write
from producer.core.contract import Job, ObjectRef
from producer.core.errors import BucketNotAllowed, InvalidJob
from producer.core.settings import Settings

SETTINGS = Settings(
    input_buckets=("photos", "shared/styles/"),
    output_buckets=("results/stylized/",),
    weights="s3://results/stylized/vgg19.weights.h5",
)


def test_entries_are_buckets_or_bucket_prefixes() -> None:
    assert admits(("photos",), ObjectRef("photos", "a/b.png"))
    assert admits(("shared/styles/",), ObjectRef("shared", "styles/x.jpg"))
    assert not admits(("shared/styles/",), ObjectRef("shared", "private/x.jpg"))
    assert not admits(("photos",), ObjectRef("photos-other", "a.png"))
    assert admits((), ObjectRef("anything", "a.png"))  # no list: everything


def test_reading_and_writing_are_separate() -> None:
    check_read(SETTINGS, ObjectRef("photos", "a.png"), "content")
    with pytest.raises(BucketNotAllowed, match=r"output: s3://photos/out.png is outside the buckets jobs may write"):
        check_write(SETTINGS, ObjectRef("photos", "out.png"))
    with pytest.raises(BucketNotAllowed, match="STYLEQUEUE_INPUT_BUCKETS=photos,shared/styles/"):
        check_read(SETTINGS, ObjectRef("results", "stylized/x.png"), "style")
    check_write(SETTINGS, ObjectRef("results", "stylized/x.png"))


def test_the_weights_are_never_an_output_whatever_the_lists_say() -> None:
    with pytest.raises(InvalidJob, match="is the model's weights"):
        check_write(SETTINGS, ObjectRef("results", "stylized/vgg19.weights.h5"))


def test_a_job_is_checked_whole_with_its_exact_output_key() -> None:
    job = Job.from_message(
        {"content": "s3://photos/c.png", "style": "s3://shared/styles/s.png", "output": "s3://results/stylized/"}
    )
    check_job(SETTINGS, job, "j1")
    outside = Job.from_message({**job.to_message(), "output": "s3://results/"})  # the bucket root is not allowed
    with pytest.raises(BucketNotAllowed, match="s3://results/j1.png"):
        check_job(SETTINGS, outside, "j1")


def test_the_old_single_list_still_covers_both() -> None:
    legacy = Settings(allowed_buckets=("photos",))
    check_read(legacy, ObjectRef("photos", "a.png"), "content")
    check_write(legacy, ObjectRef("photos", "out.png"))


def test_entries_match_by_path_segment_not_by_string_prefix() -> None:
    for entry in ("photos/acme/", "photos/acme"):
        assert admits((entry,), ObjectRef("photos", "acme/x.png"))
        assert not admits((entry,), ObjectRef("photos", "acme-corp/x.png"))
        assert not admits((entry,), ObjectRef("photos", "acme"))


def test_a_keys_document_with_unfinished_prefixes_or_overlapping_tenants_is_refused() -> None:
    import json

    import pytest

    from producer.core.errors import ConfigError
    from producer.core.settings import Settings
    from producer.tenants import Tenants, hash_key

    def keys(*entries: dict) -> Settings:
        return Settings(api_keys=json.dumps({"keys": list(entries)}))

    def tenant(name: str, inputs: list[str], outputs: list[str]) -> dict:
        return {"tenant": name, "key_sha256": hash_key(name), "input": inputs, "output": outputs}

    with pytest.raises(ConfigError, match=r"keys\[0\].input\[0\] 'photos/acme' must end with '/'"):
        Tenants.load(keys(tenant("acme", ["photos/acme"], ["out/acme/"])))
    with pytest.raises(ConfigError, match="tenants 'acme' and 'globex' overlap: 'out/' and 'out/globex/'"):
        Tenants.load(keys(tenant("acme", ["in/acme/"], ["out/"]), tenant("globex", ["in/globex/"], ["out/globex/"])))
    with pytest.raises(ConfigError, match="overlap: 'out/' and 'out/globex/'"):  # reading another's outputs
        Tenants.load(keys(tenant("acme", ["out/"], ["out/acme/"]), tenant("globex", ["in/globex/"], ["out/globex/"])))
    apart = Tenants.load(
        keys(tenant("acme", ["in/acme/"], ["out/acme/"]), tenant("acme-corp", ["in/acme-corp/"], ["out/acme-corp/"]))
    )
    assert len(apart.by_hash) == 2  # acme/ and acme-corp/ are different folders
