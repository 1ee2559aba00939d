"""The style-transfer engine: Gatys et al. with VGG19 features and scipy's L-BFGS-B.

The engine knows nothing of files, queues or object stores: it takes decoded RGB arrays and
:class:`~producer.params.Params` and returns a :class:`Result`. Progress goes to a callback as a
small :class:`Progress` dataclass once per L-BFGS iteration.

What makes it fast compared with the tutorial it reproduces:

* the VGG19 model is built once per process (:mod:`worker.vgg`) and cut after the deepest layer a
  loss uses;
* content features and style Grams are computed once per job; only the generated image goes
  through the network at each evaluation (the tutorial pushes all three images every time);
* loss and gradient come from one compiled ``tf.function``; its traces are cached per image
  shape, and every weight is passed as a tensor so a new job of the same size never retraces.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.optimize
import tensorflow as tf
from PIL import Image

from producer.errors import ImageError, InvalidJob
from producer.params import Params
from worker import images, losses, vgg

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """State after one L-BFGS iteration.

    Attributes:
        iteration: Iterations done, 1-based.
        total: Iterations asked for.
        loss: Total weighted loss at the current image.
        content_loss: Weighted content part of ``loss``.
        style_loss: Weighted style part of ``loss``.
        tv_loss: Weighted total-variation part of ``loss``.
        elapsed_s: Seconds since the optimization started.
    """

    iteration: int
    total: int
    loss: float
    content_loss: float
    style_loss: float
    tv_loss: float
    elapsed_s: float


#: Called after every iteration; return ``True`` to stop early (the current image is kept).
ProgressCallback = Callable[[Progress], "bool | None"]


@dataclass
class Result:
    """Outcome of one transfer.

    Attributes:
        image: The stylized image, ``(H, W, 3)`` uint8 RGB.
        loss: Final total loss; ``content_loss``, ``style_loss``, ``tv_loss`` are its parts.
        iterations: L-BFGS iterations done, counting those before a resume.
        evaluations: Loss-and-gradient evaluations done (line searches make this >= iterations).
        seconds: Wall time of the optimization, targets included, in seconds.
        stopped_early: The callback asked to stop before ``iterations`` were done.
        history: The :class:`Progress` of every iteration of this run.
        resumed_from: Iteration of the checkpoint this run started from (0: from scratch).
    """

    image: np.ndarray
    loss: float
    content_loss: float
    style_loss: float
    tv_loss: float
    iterations: int
    evaluations: int
    seconds: float
    stopped_early: bool = False
    history: list[Progress] = field(default_factory=list, repr=False)
    resumed_from: int = 0

    @property
    def seconds_per_iteration(self) -> float:
        """Mean wall seconds per L-BFGS iteration of this run."""
        return self.seconds / max(1, self.iterations - self.resumed_from)


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` → ``(1, H, W, 3)`` float32 BGR minus the ImageNet mean (Keras "caffe")."""
    bgr = rgb[..., ::-1].astype(np.float32) - np.asarray(vgg.BGR_MEAN, np.float32)
    return bgr[None]


def deprocess(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`preprocess`: back to RGB uint8 ``(H, W, 3)``, clipped and rounded."""
    bgr = np.asarray(x, np.float64).reshape(x.shape[-3:]) + np.asarray(vgg.BGR_MEAN)
    return np.clip(np.rint(bgr[..., ::-1]), 0, 255).astype(np.uint8)


def keep_colors(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Luminance of ``stylized`` with the chroma (Cb, Cr) of ``content``; both ``(H, W, 3)`` uint8."""
    y, _, _ = Image.fromarray(stylized).convert("YCbCr").split()
    _, cb, cr = Image.fromarray(content).convert("YCbCr").split()
    return np.asarray(Image.merge("YCbCr", (y, cb, cr)).convert("RGB"))


class Engine:
    """Runs style transfers with one VGG19 per process.

    Build one per process and reuse it for every job: the model and the compiled loss functions
    are cached here.

    Args:
        weights: ``"imagenet"`` or a path to a Keras VGG19 (no top) weights file.
        weights_sha256: Expected hex sha256 of the weights file, or ``None``.
        jit_compile: Compile the loss with XLA. ``None`` picks XLA on GPUs only (it is slower
            than oneDNN on CPUs).
    """

    def __init__(
        self, weights: str = "imagenet", weights_sha256: str | None = None, jit_compile: bool | None = None
    ) -> None:
        self.weights = weights
        self.weights_sha256 = weights_sha256
        if jit_compile is None:
            jit_compile = bool(tf.config.list_physical_devices("GPU"))
        self.jit_compile = jit_compile
        self._loss_fns: dict[tuple[tuple[str, ...], tuple[str, ...], bool], Callable[..., Any]] = {}
        #: Number of times a loss function was traced (compiled); tests use it to prove caching.
        self.traces = 0

    def warm_up(self, params: Params = Params()) -> None:
        """Load the weights now (e.g. at worker start) rather than at the first job."""
        self._model(params)

    # -- the two compiled pieces -------------------------------------------------------------

    def _model(self, params: Params) -> object:
        layers = tuple(params.content_layers) + tuple(params.style_layers)
        return vgg.feature_model(self.weights, layers, self.weights_sha256)

    def _loss_fn(self, params: Params) -> Callable[..., Any]:
        key = (tuple(params.content_layers), tuple(params.style_layers), params.normalization == "invariant")
        if key not in self._loss_fns:
            self._loss_fns[key] = self._compile(params, key[2])
        return self._loss_fns[key]

    def _compile(self, params: Params, invariant: bool) -> Callable[..., Any]:
        model = self._model(params)
        n_content = len(params.content_layers)

        def loss_and_grad(x, content_targets, style_targets, weights, layer_weights, tv_power):  # type: ignore[no-untyped-def]
            self.traces += 1  # runs only while tracing
            with tf.GradientTape() as tape:
                tape.watch(x)
                feats = model(x, training=False)  # type: ignore[operator]
                image_pixels = tf.cast(tf.shape(x)[1] * tf.shape(x)[2], tf.float32)
                c = weights[0] * losses.content_loss(feats[:n_content], content_targets, invariant)
                s = weights[1] * losses.style_loss(
                    feats[n_content:], style_targets, layer_weights, image_pixels, invariant
                )
                t = weights[2] * losses.total_variation(x, tv_power, invariant)
                total = c + s + t
            return total, tf.stack([c, s, t]), tape.gradient(total, x)

        return tf.function(loss_and_grad, jit_compile=self.jit_compile, reduce_retracing=False)

    # -- one job -------------------------------------------------------------------------------

    def transfer(
        self,
        content: np.ndarray,
        styles: Sequence[np.ndarray],
        params: Params = Params(),
        style_blend: Sequence[float] | None = None,
        init_image: np.ndarray | None = None,
        callback: ProgressCallback | None = None,
    ) -> Result:
        """Stylize ``content`` with ``styles``: :meth:`prepare` then :meth:`Problem.optimize`.

        Args:
            content: Content image, ``(H, W, 3)`` uint8 RGB, any size (resized to ``params.size``).
            styles: One or more style images, ``(H, W, 3)`` uint8 RGB, any size (resized to the
                output's area times ``params.style_scale``², aspect ratio kept).
            params: Options; the defaults are the seed tutorial's.
            style_blend: One non-negative weight per style image (normalized to sum 1); ``None``
                means equal weights.
            init_image: Starting image when ``params.init == "image"``.
            callback: Receives a :class:`Progress` after each iteration; returning ``True`` stops.

        Raises:
            InvalidJob: inconsistent arguments (no style, bad blend, missing init image).
            ImageError: an image too small for the layers used.
        """
        start = time.perf_counter()
        problem = self.prepare(content, styles, params, style_blend, init_image)
        return problem.optimize(params.iterations, callback, start=start)

    def prepare(
        self,
        content: np.ndarray,
        styles: Sequence[np.ndarray],
        params: Params = Params(),
        style_blend: Sequence[float] | None = None,
        init_image: np.ndarray | None = None,
    ) -> Problem:
        """Resize the images and compute the content and style targets once; see :meth:`transfer`."""
        blend = _blend(styles, style_blend)
        content_rgb = _resized(content, params.size, params, "content image")
        height, width = content_rgb.shape[:2]
        model = self._model(params)
        n_content = len(params.content_layers)

        content_feats = model(preprocess(content_rgb), training=False)[:n_content]  # type: ignore[operator]
        style_targets: list[tf.Tensor] = []
        for i, (style, w) in enumerate(zip(styles, blend)):
            area = height * width * params.style_scale**2
            style_img = images.resize_to_area(Image.fromarray(_checked(style, f"style image {i + 1}")), area)
            style_rgb = _resized(np.asarray(style_img), None, params, f"style image {i + 1}")
            feats = model(preprocess(style_rgb), training=False)[n_content:]  # type: ignore[operator]
            grams = [w * losses.per_pixel_gram(f) for f in feats]
            style_targets = grams if i == 0 else [a + b for a, b in zip(style_targets, grams)]

        args = (
            list(content_feats),
            style_targets,
            tf.constant([params.content_weight, params.style_weight, params.tv_weight], tf.float32),
            tf.constant(params.layer_weights, tf.float32),
            tf.constant(params.tv_power, tf.float32),
        )
        x0 = self._initial(params, content_rgb, init_image)
        return Problem(self._loss_fn(params), args, x0, content_rgb, params.preserve_colors)

    def _initial(self, params: Params, content_rgb: np.ndarray, init_image: np.ndarray | None) -> np.ndarray:
        if params.init == "content":
            return preprocess(content_rgb)
        if params.init == "noise":
            rng = np.random.default_rng(params.seed)
            return preprocess(rng.integers(0, 256, content_rgb.shape, dtype=np.uint8))
        if init_image is None:
            raise InvalidJob("params.init", "'image' needs an init image")
        size = content_rgb.shape[:2]
        return preprocess(np.asarray(images.resize(Image.fromarray(init_image), size)))


class Problem:
    """One prepared transfer: the targets are fixed, only the generated image varies.

    Args:
        loss_fn: The compiled loss-and-gradient function.
        args: Its fixed arguments (targets and weights as tensors).
        x0: Starting point, preprocessed ``(1, H, W, 3)``.
        content_rgb: The resized content image (for ``preserve_colors``).
        preserve_colors: Put the content's chroma back on the result.
    """

    def __init__(
        self,
        loss_fn: Callable[..., Any],
        args: tuple[object, ...],
        x0: np.ndarray,
        content_rgb: np.ndarray,
        preserve_colors: bool,
    ) -> None:
        self._loss_fn = loss_fn
        self._args = args
        self.x0 = x0
        self.shape = x0.shape
        self.content_rgb = content_rgb
        self.preserve_colors = preserve_colors
        self.evaluations = 0
        #: Weighted (content, style, tv) parts of recent evaluations, keyed by their total loss.
        self._parts: dict[float, np.ndarray] = {}

    def loss_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Evaluate at a preprocessed image; return (loss, (content, style, tv) parts, gradient)."""
        total, parts, grad = self._loss_fn(tf.constant(x.reshape(self.shape), tf.float32), *self._args)
        return float(total), parts.numpy(), grad.numpy()

    def evaluate(self, flat: np.ndarray) -> tuple[float, np.ndarray]:
        """Scipy's objective: float64 vector in, (loss, float64 gradient vector) out."""
        self.evaluations += 1
        loss, parts, grad = self.loss_and_grad(flat)
        if len(self._parts) > 64:
            self._parts.clear()
        self._parts[loss] = parts
        return loss, grad.astype(np.float64).ravel()

    def optimize(
        self,
        iterations: int,
        callback: ProgressCallback | None = None,
        start: float | None = None,
        on_iterate: Callable[[int, np.ndarray], None] | None = None,
        done: int = 0,
    ) -> Result:
        """Run L-BFGS-B from ``x0`` up to iteration ``iterations``; see :meth:`Engine.transfer`.

        Args:
            iterations: The run's total iteration count.
            callback: Receives a :class:`Progress` per iteration; returning ``True`` stops.
            start: ``time.perf_counter()`` at the job's start (default: now).
            on_iterate: Receives ``(iteration, x)`` after each iteration, ``x`` the current
                preprocessed image (for checkpoints; do not keep a reference).
            done: Iterations already done before ``x0`` (a resumed run): only
                ``iterations - done`` remain, and progress counts on from ``done``.
        """
        start = time.perf_counter() if start is None else start
        history: list[Progress] = []
        stopped = False

        def on_iteration(intermediate_result: scipy.optimize.OptimizeResult) -> None:
            nonlocal stopped
            loss = float(intermediate_result.fun)
            c, s, t = (float(v) for v in self._parts.get(loss, np.full(3, np.nan)))
            n = done + len(history) + 1
            p = Progress(n, iterations, loss, c, s, t, elapsed_s=time.perf_counter() - start)
            history.append(p)
            if on_iterate is not None:
                on_iterate(n, intermediate_result.x)
            if callback is not None and callback(p):
                stopped = True
                raise StopIteration

        res = scipy.optimize.minimize(
            self.evaluate,
            self.x0.ravel().astype(np.float64),
            jac=True,
            method="L-BFGS-B",
            callback=on_iteration,
            options={"maxiter": max(1, iterations - done)},
        )
        final = self._parts.get(float(res.fun))
        if final is None:  # the optimizer returned a point whose parts we did not keep
            final = self._parts[self.evaluate(res.x)[0]]
        image = deprocess(res.x.reshape(self.shape))
        if self.preserve_colors:
            image = keep_colors(image, self.content_rgb)
        seconds = time.perf_counter() - start
        log.debug(
            "transfer %s: %d iterations, %d evaluations, loss %.6g in %.2f s",
            self.shape,
            len(history),
            self.evaluations,
            res.fun,
            seconds,
        )
        c, s, t = (float(v) for v in final)
        return Result(
            image,
            float(res.fun),
            c,
            s,
            t,
            iterations=done + len(history),
            evaluations=self.evaluations,
            seconds=seconds,
            stopped_early=stopped,
            history=history,
            resumed_from=done,
        )


def _blend(styles: Sequence[np.ndarray], blend: Sequence[float] | None) -> list[float]:
    if not styles:
        raise InvalidJob("style", "at least one style image is needed")
    if blend is None:
        return [1.0 / len(styles)] * len(styles)
    if len(blend) != len(styles) or any(not np.isfinite(w) or w < 0 for w in blend) or sum(blend) <= 0:
        raise InvalidJob("style", "needs one non-negative blend weight per style image, not all zero")
    return [w / sum(blend) for w in blend]


def _checked(rgb: np.ndarray, name: str) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError(f"{name}: expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    return rgb


def _resized(rgb: np.ndarray, size: int | Sequence[int] | None, params: Params, name: str) -> np.ndarray:
    _checked(rgb, name)
    if size is not None:
        rgb = np.asarray(images.resize(Image.fromarray(rgb), size))
    need = vgg.min_side_px(tuple(params.content_layers) + tuple(params.style_layers))
    if min(rgb.shape[:2]) < need:
        raise ImageError(
            f"{name}: {rgb.shape[1]}x{rgb.shape[0]} px is too small for the layers used (each side needs >= {need} px)"
        )
    return rgb
