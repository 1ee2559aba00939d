"""Output image formats: the one table the contract, the encoder and the object store read.

Pure Python, no Pillow: the light client validates ``format`` and output suffixes with it.

====== ============== ======================= ===========
name   Pillow name    Content-Type            suffixes
====== ============== ======================= ===========
png    ``PNG``        ``image/png``           ``.png``
jpeg   ``JPEG``       ``image/jpeg``          ``.jpg``, ``.jpeg``
webp   ``WEBP``       ``image/webp``          ``.webp``
====== ============== ======================= ===========
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageFormat:
    """One output format.

    Attributes:
        name: The contract's name (``png``, ``jpeg``, ``webp``).
        pillow: Pillow's format name for encoding.
        content_type: The object's ``Content-Type``.
        suffixes: File suffixes that mean this format; the first is the one written.
    """

    name: str
    pillow: str
    content_type: str
    suffixes: tuple[str, ...]

    @property
    def extension(self) -> str:
        """The suffix of outputs written under a prefix (``png``, ``jpg``, ``webp``)."""
        return self.suffixes[0]


FORMATS: dict[str, ImageFormat] = {
    f.name: f
    for f in (
        ImageFormat("png", "PNG", "image/png", ("png",)),
        ImageFormat("jpeg", "JPEG", "image/jpeg", ("jpg", "jpeg")),
        ImageFormat("webp", "WEBP", "image/webp", ("webp",)),
    )
}
_BY_SUFFIX = {s: f for f in FORMATS.values() for s in f.suffixes}


def named(name: str) -> ImageFormat | None:
    """The format called ``name`` or with suffix ``name`` (``"jpg"`` works too), case-insensitive."""
    return FORMATS.get(name.lower()) or _BY_SUFFIX.get(name.lower())


def of_path(path: str) -> ImageFormat | None:
    """The format a file name or key says by its suffix, or ``None`` (no suffix, or not an image suffix)."""
    name = path.rsplit("/", 1)[-1]
    return _BY_SUFFIX.get(name.rpartition(".")[2].lower()) if "." in name else None


def suffix_of(path: str) -> str:
    """The suffix of a file name or key, lower case, without the dot (``""`` when there is none)."""
    name = path.rsplit("/", 1)[-1]
    return name.rpartition(".")[2].lower() if "." in name else ""
