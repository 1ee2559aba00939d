"""Colour control (``params.color``).

After Gatys et al., "Preserving Color in Neural Artistic Style Transfer" (2016):

* ``preserve``: the stylized image's luminance with the content's chroma (Cb, Cr), after the run.
* ``luminance``: the optimization sees luminance only: content and style become grey images (the
  style's luminance matched to the content's mean and standard deviation first); the result's
  luminance is then combined with the content's chroma.
* ``match``: each style image's colours are matched to the content's before the run: a linear map
  that gives the style's pixels the content's colour mean and covariance (Cholesky factors).

All functions take and return ``(H, W, 3)`` uint8 RGB arrays.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: ITU-R BT.601 luma weights (Pillow's YCbCr, JPEG's).
_LUMA = np.array([0.299, 0.587, 0.114])


def luma(rgb: np.ndarray) -> np.ndarray:
    """The luminance of an RGB image, ``(H, W)`` float64 in 0…255."""
    return np.asarray(rgb, np.float64) @ _LUMA


def chroma(rgb: np.ndarray) -> np.ndarray:
    """The Cb and Cr planes (Pillow's YCbCr), ``(H, W, 2)`` uint8."""
    return np.asarray(Image.fromarray(rgb).convert("YCbCr"))[..., 1:]


def with_chroma_of(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    """``stylized``'s luminance with ``content``'s chroma (Cb, Cr); both the same size."""
    y, _, _ = Image.fromarray(stylized).convert("YCbCr").split()
    _, cb, cr = Image.fromarray(content).convert("YCbCr").split()
    return np.asarray(Image.merge("YCbCr", (y, cb, cr)).convert("RGB"))


def grey(y: np.ndarray) -> np.ndarray:
    """A luminance plane as a 3-channel grey RGB image (what VGG19 sees in ``luminance`` mode)."""
    g = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def luminance_pair(content: np.ndarray, style: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Content and style as grey images.

    The style's luminance is shifted and scaled to the content's mean and standard deviation.
    """
    yc, ys = luma(content), luma(style)
    scale = yc.std() / max(ys.std(), 1e-6)
    return grey(yc), grey((ys - ys.mean()) * scale + yc.mean())


def match(style: np.ndarray, content: np.ndarray) -> np.ndarray:
    """``style`` with its colours mapped to ``content``'s mean and covariance.

    x' = L_c L_s⁻¹ (x − μ_s) + μ_c, with L the Cholesky factors of the two images' 3×3 colour
    covariances: the result's colour mean and covariance are the content's.
    """
    s = np.asarray(style, np.float64).reshape(-1, 3)
    c = np.asarray(content, np.float64).reshape(-1, 3)
    mu_s, mu_c = s.mean(0), c.mean(0)
    eye = np.eye(3) * 1e-3  # a flat image's covariance is singular
    l_s = np.linalg.cholesky(np.cov(s, rowvar=False) + eye)
    l_c = np.linalg.cholesky(np.cov(c, rowvar=False) + eye)
    mapped = (s - mu_s) @ np.linalg.solve(l_s, np.eye(3)).T @ l_c.T + mu_c
    return np.clip(np.rint(mapped), 0, 255).astype(np.uint8).reshape(np.shape(style))
