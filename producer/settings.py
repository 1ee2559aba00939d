"""One typed settings object read from the environment, shared by the client, the CLI and the worker.

Every variable is optional; the defaults suit a laptop. Units are in the names.

=============================== ============================ ==========================================
variable                        default                      meaning
=============================== ============================ ==========================================
``STYLEQUEUE_WEIGHTS``          ``imagenet``                 VGG19 weights: ``imagenet`` or a file path
``STYLEQUEUE_WEIGHTS_SHA256``   (none)                       expected sha256 of the weights file
``STYLEQUEUE_MAX_PIXELS``       ``50000000``                 largest input image (width×height)
``STYLEQUEUE_MAX_SIZE_PX``      ``2048``                     largest output side a job may ask for
``STYLEQUEUE_MAX_ITERATIONS``   ``2000``                     most L-BFGS iterations a job may ask for
=============================== ============================ ==========================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from producer.errors import InvalidJob


@dataclass(frozen=True)
class Settings:
    """Deployment settings; see the module docstring for the environment variables.

    Attributes:
        weights: VGG19 weights, ``"imagenet"`` or a path to a Keras weights file.
        weights_sha256: Expected hex sha256 of the weights file, or ``None`` to skip the check.
        max_pixels: Largest input image accepted, in pixels (checked before decoding).
        max_size_px: Largest output side a job may ask for, in pixels.
        max_iterations: Most L-BFGS iterations a job may ask for.
    """

    weights: str = "imagenet"
    weights_sha256: str | None = None
    max_pixels: int = 50_000_000
    max_size_px: int = 2048
    max_iterations: int = 2000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``STYLEQUEUE_<FIELD>`` variables; raise :class:`InvalidJob` naming a bad one."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            name = f"STYLEQUEUE_{f.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            if f.type in ("int", int):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise InvalidJob(name, f"must be an integer, got {raw!r}") from None
            else:
                values[f.name] = raw
        return cls(**values)  # type: ignore[arg-type]
