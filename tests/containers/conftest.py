"""The images, built once for every container test module (tests/support/podman.py builds them)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from support.podman import IMAGES, build_images, podman


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, float]]:
    """Build seconds per image; the images are removed at the end unless STYLEQUEUE_KEEP_IMAGES=1."""
    seconds = build_images(tmp_path_factory.mktemp("images"))
    print("\nbuild seconds:", json.dumps({k: round(v) for k, v in seconds.items()}))
    yield seconds
    if not os.environ.get("STYLEQUEUE_KEEP_IMAGES"):
        podman("rmi", "-f", *IMAGES.values(), check=False)
