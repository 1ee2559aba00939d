"""The style-transfer engine: Gatys et al. with VGG19 features and scipy's L-BFGS-B.

The engine knows nothing of files, queues or object stores: it takes decoded RGB arrays and
:class:`~producer.core.params.Params` and returns a :class:`Result`. Progress goes to a callback as a
small :class:`Progress` dataclass once per L-BFGS iteration; the optimizer's state goes to
another (for checkpoints) as a :class:`State` it can be resumed from.

What makes it fast compared with the tutorial it reproduces:

* the VGG19 model is built once per process and precision (:mod:`worker.nst.vgg`) and cut after
  the deepest layer a loss uses;
* content features and style statistics are computed once per job and level; only the generated
  image goes through the network at each evaluation (the tutorial pushes all three every time);
* loss and gradient come from one compiled ``tf.function``; its traces are cached per image
  shape, and every weight is passed as a tensor so a new job of the same size never retraces;
* ``precision="bfloat16"`` (or ``auto`` where the hardware has it) runs the convolutions in
  bfloat16; the losses, Gram matrices and the L-BFGS state stay float32/float64.

Options beyond the seed: coarse-to-fine levels and schedules (:mod:`worker.nst.pyramid`), colour
control (:mod:`worker.nst.colour`), the ``mean_std`` and ``w2`` style statistics
(:mod:`worker.nst.losses`), regional styles (:mod:`worker.nst.masks`), layer weight presets, and an
early stop on a relative tolerance.
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

from producer.core.errors import ImageError, InvalidJob
from producer.core.params import Params
from worker.nst import budget, colour, images, losses, masks, pyramid, tiling, vgg

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """State after one L-BFGS iteration.

    Attributes:
        iteration: Iterations done, 1-based, counted across levels (and resumed runs).
        total: Iterations planned across all levels.
        loss: Total weighted loss at the current image.
        content_loss: Weighted content part of ``loss``.
        style_loss: Weighted style part of ``loss``.
        tv_loss: Weighted total-variation part of ``loss``.
        elapsed_s: Seconds since the transfer started.
        level: The coarse-to-fine level, 1-based (1 of 1 without ``scales``).
        levels: How many levels there are.
    """

    iteration: int
    total: int
    loss: float
    content_loss: float
    style_loss: float
    tv_loss: float
    elapsed_s: float
    level: int = 1
    levels: int = 1


#: Called after every iteration; return ``True`` to stop early (the current image is kept).
ProgressCallback = Callable[[Progress], "bool | None"]


@dataclass(frozen=True)
class State:
    """Where an optimization is: what a checkpoint holds to resume it.

    Attributes:
        level: Index of the level (0 = coarsest).
        iteration: Iterations done across all levels.
        x: The preprocessed image at that level, ``(1, H, W, 3)`` float32.
    """

    level: int
    iteration: int
    x: np.ndarray


@dataclass
class Result:
    """Outcome of one transfer.

    Attributes:
        image: The stylized image, ``(H, W, 3)`` uint8 RGB.
        loss: Final total loss (at the output size); ``content_loss``, ``style_loss``, ``tv_loss``
            are its parts.
        iterations: Iterations done across levels, counting those before a resume.
        evaluations: Loss-and-gradient evaluations of this run (line searches make this >= iterations).
        seconds: Wall time of the optimization, targets included, in seconds.
        stopped: Why it ended: ``iterations`` (all done), ``tolerance`` (the loss stopped improving),
            ``converged`` (L-BFGS's own criteria) or ``callback`` (asked to stop).
        history: The :class:`Progress` of every iteration of this run.
        resumed_from: Iteration of the state this run started from (0: from scratch).
    """

    image: np.ndarray
    loss: float
    content_loss: float
    style_loss: float
    tv_loss: float
    iterations: int
    evaluations: int
    seconds: float
    stopped: str = "iterations"
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


class Engine:
    """Runs style transfers with one VGG19 per process.

    Build one per process and reuse it for every job: the models and the compiled loss functions
    are cached here.

    Args:
        weights: ``"imagenet"`` or a path to a Keras VGG19 (no top) weights file.
        weights_sha256: Expected hex sha256 of the weights file, or ``None``.
        jit_compile: Compile the loss with XLA. ``None`` picks XLA on GPUs only (it is slower
            than oneDNN on CPUs).
    """

    def __init__(
        self,
        weights: str = "imagenet",
        weights_sha256: str | None = None,
        jit_compile: bool | None = None,
        devices: Sequence[str] | None = None,
        memory_limit_bytes: int = 0,
    ) -> None:
        self.weights = weights
        self.weights_sha256 = weights_sha256
        if jit_compile is None:
            jit_compile = bool(tf.config.list_physical_devices("GPU"))
        self.jit_compile = jit_compile
        #: Devices the tiles of one large image are spread over (default: every local GPU, else one CPU).
        self.devices = list(devices) if devices is not None else _local_devices()
        #: What one evaluation may use; above it, ``params.tile=None`` tiles (0: no limit known).
        self.memory_limit_bytes = memory_limit_bytes
        self._loss_fns: dict[tuple[Any, ...], Callable[..., Any]] = {}
        self._tiled_fns: dict[Any, Any] = {}
        #: Number of times a loss function was traced (compiled); tests use it to prove caching.
        self.traces = 0

    def warm_up(self, params: Params = Params()) -> None:
        """Load the weights now (e.g. at worker start) rather than at the first job."""
        self._model(params)

    def precision(self, params: Params) -> str:
        """The precision a job runs at here: ``float32`` or ``bfloat16`` (``auto`` resolved)."""
        return vgg.resolve_precision(params.precision)

    # -- the two compiled pieces -------------------------------------------------------------

    def _model(self, params: Params) -> Any:
        layers = tuple(params.content_layers) + tuple(params.style_layers)
        return vgg.feature_model(self.weights, layers, self.weights_sha256, self.precision(params))

    def _features(self, params: Params, rgb: np.ndarray) -> list[tf.Tensor]:
        """The float32 features of one image at every loss layer."""
        return [tf.cast(f, tf.float32) for f in self._model(params)(preprocess(rgb), training=False)]

    def _models(self, params: Params) -> list[tuple[str, Any]]:
        """``(device, model)`` for every device tiles may use."""
        if len(self.devices) <= 1:
            return [(self.devices[0] if self.devices else "", self._model(params))]
        layers = tuple(params.content_layers) + tuple(params.style_layers)
        precision = self.precision(params)
        return [
            (d, vgg.feature_model(self.weights, layers, self.weights_sha256, precision, device=d)) for d in self.devices
        ]

    def tile_for(self, params: Params, size: tuple[int, int], regions: int = 0) -> int:
        """The tile (px) an image of ``size`` (height, width) is evaluated in; 0: whole.

        ``params.tile``: 0 never tiles, a size tiles images with a longer side; ``None`` tiles only
        when the whole image's evaluation would not fit ``memory_limit_bytes`` (with the largest
        tile that does; ``regions``: the regional styles' masks, which it counts). However decided,
        the tiles of a tiled image are spread over every device.
        """
        layers = tuple(params.content_layers) + tuple(params.style_layers)
        if params.tile == 0:
            return 0
        if params.tile is not None:
            return params.tile if max(size) > params.tile else 0
        return budget.auto_tile(params, size, self.memory_limit_bytes, tiling.halo_px(layers), regions)

    def _loss_fn(self, params: Params) -> Callable[..., Any]:
        key = (
            tuple(params.content_layers),
            tuple(params.style_layers),
            params.normalization == "invariant",
            params.style_loss,
            self.precision(params),
        )
        if key not in self._loss_fns:
            self._loss_fns[key] = self._compile(params, invariant=key[2], style_loss=params.style_loss)
        return self._loss_fns[key]

    def _compile(self, params: Params, invariant: bool, style_loss: str) -> Callable[..., Any]:
        model = self._model(params)
        n_content = len(params.content_layers)

        sums = losses.needs_sums(style_loss)

        def loss_and_grad(x, content_targets, style_targets, weights, layer_weights, tv_power, masks):  # type: ignore[no-untyped-def]
            self.traces += 1  # runs only while tracing
            with tf.GradientTape() as tape:
                tape.watch(x)
                feats = [tf.cast(f, tf.float32) for f in model(x, training=False)]
                image_pixels = tf.cast(tf.shape(x)[1] * tf.shape(x)[2], tf.float32)
                c = weights[0] * losses.content_loss(feats[:n_content], content_targets, invariant)
                stats = losses.style_stats(feats[n_content:], masks, sums)
                s = weights[1] * losses.style_loss_of(
                    stats, style_targets, layer_weights, image_pixels, invariant, style_loss
                )
                t = weights[2] * losses.total_variation(x, tv_power, invariant)
                total = c + s + t
            return total, tf.stack([c, s, t]), tape.gradient(total, x)

        return tf.function(loss_and_grad, jit_compile=self.jit_compile, reduce_retracing=False)

    # -- one job -------------------------------------------------------------------------------

    def plan(self, content_hw: tuple[int, int], params: Params) -> list[pyramid.Level]:
        """The levels a transfer of a ``content_hw`` content image runs (one without ``scales``)."""
        final = pyramid.output_size(content_hw, params.size)
        return pyramid.levels(final, params, vgg.min_side_px(tuple(params.content_layers) + tuple(params.style_layers)))

    def transfer(
        self,
        content: np.ndarray,
        styles: Sequence[np.ndarray],
        params: Params = Params(),
        style_blend: Sequence[float] | None = None,
        init_image: np.ndarray | None = None,
        callback: ProgressCallback | None = None,
        *,
        style_masks: Sequence[np.ndarray | None] | None = None,
        on_state: Callable[[State], None] | None = None,
        resume: State | None = None,
        on_snapshot: Callable[[int, np.ndarray], None] | None = None,
        snapshot_every: int = 0,
        start: float | None = None,
    ) -> Result:
        """Stylize ``content`` with ``styles``, level by level.

        Args:
            content: Content image, ``(H, W, 3)`` uint8 RGB, any size (resized to ``params.size``).
            styles: One or more style images, ``(H, W, 3)`` uint8 RGB, any size (resized to each
                level's area times ``params.style_scale``², aspect ratio kept).
            params: Options; the defaults are the seed tutorial's.
            style_blend: One non-negative weight per style image (normalized to sum 1); ``None``
                means equal weights.
            init_image: Starting image when ``params.init == "image"``.
            callback: Receives a :class:`Progress` after each iteration; returning ``True`` stops.
            style_masks: One mask per style image, or ``None``: ``(H, W)`` float32 in [0, 1] over the
                output (any size of the content's aspect ratio), ``None`` for a style without
                one; styles given the same array share a region (:mod:`worker.nst.masks`).
            on_state: Receives the :class:`State` after each iteration (for checkpoints; do not
                keep its array).
            resume: A state to continue from (a checkpoint of the same job).
            on_snapshot: Receives ``(iteration, image)`` every ``snapshot_every`` iterations, the
                image as the result would look then (``stylize --save-every``).
            snapshot_every: See ``on_snapshot``.
            start: ``time.perf_counter()`` at the job's start (default: now).

        Raises:
            InvalidJob: inconsistent arguments (no style, bad blend, missing init image).
            ImageError: an image too small for the layers used; a mask of another aspect ratio
                than the content's, or masks black everywhere.
        """
        start = time.perf_counter() if start is None else start
        blend = _blend(styles, style_blend)
        checked = [_checked(s, f"style image {i + 1}") for i, s in enumerate(styles)]
        content = _checked(content, "content image")
        plan = self.plan(content.shape[:2], params)
        total = plan[-1].last
        final_content = _resized(content, (plan[-1].height, plan[-1].width), params, "content image")
        if params.color == "match":
            checked = [colour.match(s, final_content) for s in checked]
        resumed_from = 0
        x: np.ndarray | None = None
        first_level = 0
        if resume is not None and 0 <= resume.level < len(plan):
            first_level, x, resumed_from = resume.level, resume.x, resume.iteration
        history: list[Progress] = []
        evaluations = 0
        stopped = "iterations"
        problem: Problem | None = None
        outcome: scipy.optimize.OptimizeResult | None = None
        for level in plan[first_level:]:
            size = (level.height, level.width)
            problem = self.prepare(content, checked, params, blend, init_image, size=size, style_masks=style_masks)
            if x is not None:
                problem.x0 = _upsampled(x, size)
            done = max(level.first, resumed_from) if level.index == first_level else level.first

            def report(p: Progress, lv: pyramid.Level = level, problem: Problem = problem) -> bool | None:
                p = Progress(
                    p.iteration,
                    total,
                    p.loss,
                    p.content_loss,
                    p.style_loss,
                    p.tv_loss,
                    time.perf_counter() - start,
                    lv.index + 1,
                    len(plan),
                )
                history.append(p)
                if on_snapshot is not None and snapshot_every and p.iteration % snapshot_every == 0:
                    on_snapshot(p.iteration, problem.finish(problem.current))
                return callback(p) if callback is not None else None

            def state(n: int, flat: np.ndarray, lv: pyramid.Level = level) -> None:
                if on_state is not None:
                    on_state(State(lv.index, n, flat.reshape(1, lv.height, lv.width, 3).astype(np.float32)))

            outcome = problem.minimize(level.last, done, report, state, level.tolerance, level.window)
            evaluations += problem.evaluations
            x = outcome.x.reshape(problem.shape)
            stopped = outcome.stopped
            if stopped == "callback":
                break
        assert problem is not None and outcome is not None and x is not None
        image = problem.finish(x)
        c, s, t = (float(v) for v in outcome.parts)
        iterations = history[-1].iteration if history else resumed_from
        seconds = time.perf_counter() - start
        log.debug(
            "transfer: %d levels, %d iterations, loss %.6g in %.2f s (%s)",
            len(plan),
            iterations,
            outcome.fun,
            seconds,
            stopped,
        )
        return Result(
            image,
            float(outcome.fun),
            c,
            s,
            t,
            iterations=iterations,
            evaluations=evaluations,
            seconds=seconds,
            stopped=stopped,
            history=history,
            resumed_from=resumed_from,
        )

    def prepare(
        self,
        content: np.ndarray,
        styles: Sequence[np.ndarray],
        params: Params = Params(),
        style_blend: Sequence[float] | None = None,
        init_image: np.ndarray | None = None,
        size: tuple[int, int] | None = None,
        style_masks: Sequence[np.ndarray | None] | None = None,
    ) -> Problem:
        """One level's problem: resize the images, compute the content and style targets once.

        Args:
            content: As :meth:`transfer`.
            styles: As :meth:`transfer`.
            params: As :meth:`transfer`.
            style_blend: As :meth:`transfer`.
            init_image: As :meth:`transfer`.
            size: ``(height, width)`` of this level (default: the output size).
            style_masks: As :meth:`transfer`.
        """
        blend = _blend(styles, style_blend)
        content = _checked(content, "content image")
        _check_masks(style_masks, blend, content.shape[:2])
        if size is None:
            size = pyramid.output_size(content.shape[:2], params.size)
        content_rgb = _resized(content, size, params, "content image")
        height, width = content_rgb.shape[:2]
        seen_content = content_rgb
        n_content = len(params.content_layers)

        layers = list(params.content_layers) + list(params.style_layers)
        found = masks.regions(blend, style_masks)
        tile = self.tile_for(params, (height, width), len(found or ()))
        style_idx = list(range(n_content, len(layers)))

        per_style: list[list[losses.StyleTarget]] = []
        for i, style in enumerate(styles):
            area = height * width * params.style_scale**2
            style_img = images.resize_to_area(Image.fromarray(_checked(style, f"style image {i + 1}")), area)
            style_rgb = _resized(np.asarray(style_img), None, params, f"style image {i + 1}")
            if params.color == "luminance":
                seen_content, style_rgb = colour.luminance_pair(content_rgb, style_rgb)
            style_tile = self.tile_for(params, style_rgb.shape[:2])
            if style_tile:
                stats = tiling.moments(self._models(params), preprocess(style_rgb), layers, style_tile, style_idx, True)
                per_style.append([losses.target_of(m) for m in stats])
            else:
                per_style.append([losses.style_target(f) for f in self._features(params, style_rgb)[n_content:]])
        style_targets, layer_weights, region_masks = _style_terms(per_style, blend, params, found, (height, width))
        if params.style_loss == "w2":  # Σs^½, once per job and level
            style_targets = [losses.with_cov_sqrt(t) for t in style_targets]
        weights = tf.constant([params.content_weight, params.style_weight, params.tv_weight], tf.float32)
        tv_power = tf.constant(params.tv_power, tf.float32)
        x0 = self._initial(params, seen_content, init_image)
        if tile:
            content_maps = tiling.features(
                self._models(params), preprocess(seen_content), layers, tile, list(range(n_content))
            )
            objective = tiling.TiledObjective(
                self._models(params),
                params.content_layers,
                params.style_layers,
                content_maps,
                style_targets,
                weights,
                layer_weights,
                tv_power,
                params.normalization == "invariant",
                params.style_loss,
                x0.shape,
                tile,
                self._tiled_fns,
                region_masks,
            )
            evaluate = objective.loss_and_grad
        else:
            content_feats = self._features(params, seen_content)[:n_content]
            loss_fn = self._loss_fn(params)
            mask_tensors = [tf.constant(m[None, :, :, None]) for m in region_masks]
            args = (content_feats, style_targets, weights, layer_weights, tv_power, mask_tensors)

            def evaluate(x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
                total, parts, grad = loss_fn(tf.constant(x.reshape(x0.shape), tf.float32), *args)
                return float(total), parts.numpy(), grad.numpy()

        return Problem(evaluate, x0, content_rgb, params.color, params.lbfgs_memory, tile)

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


class _Outcome(scipy.optimize.OptimizeResult):
    """scipy's result, plus why it stopped and the final loss's parts."""


class Problem:
    """One prepared level: the targets are fixed, only the generated image varies.

    Args:
        evaluate: Loss, its (content, style, tv) parts and gradient at a preprocessed image
            (whole, or in tiles: :mod:`worker.nst.tiling`).
        x0: Starting point, preprocessed ``(1, H, W, 3)``.
        content_rgb: The resized content image (for the colour modes).
        color: ``params.color``: what to do to the image once optimized.
        lbfgs_memory: L-BFGS correction pairs (``params.lbfgs_memory``).
        tile: The tile size it is evaluated in (0: whole).
    """

    def __init__(
        self,
        evaluate: Callable[[np.ndarray], tuple[float, np.ndarray, np.ndarray]],
        x0: np.ndarray,
        content_rgb: np.ndarray,
        color: str,
        lbfgs_memory: int = 10,
        tile: int = 0,
    ) -> None:
        self._evaluate = evaluate
        self.lbfgs_memory = lbfgs_memory
        self.tile = tile
        self.x0 = x0
        self.shape = x0.shape
        self.content_rgb = content_rgb
        self.color = color
        self.evaluations = 0
        #: The optimizer's current point (after the last iteration).
        self.current: np.ndarray = x0
        #: Weighted (content, style, tv) parts of recent evaluations, keyed by their total loss.
        self._parts: dict[float, np.ndarray] = {}

    def loss_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Evaluate at a preprocessed image; return (loss, (content, style, tv) parts, gradient)."""
        return self._evaluate(x)

    def evaluate(self, flat: np.ndarray) -> tuple[float, np.ndarray]:
        """Scipy's objective: float64 vector in, (loss, float64 gradient vector) out."""
        self.evaluations += 1
        loss, parts, grad = self.loss_and_grad(flat)
        if len(self._parts) > 64:
            self._parts.clear()
        self._parts[loss] = parts
        return loss, grad.astype(np.float64).ravel()

    def finish(self, x: np.ndarray) -> np.ndarray:
        """The RGB image a preprocessed point is, colour mode applied."""
        image = deprocess(np.asarray(x).reshape(self.shape))
        if self.color in ("preserve", "luminance"):
            image = colour.with_chroma_of(image, self.content_rgb)
        return image

    def minimize(
        self,
        until: int,
        done: int,
        callback: Callable[[Progress], bool | None] | None = None,
        on_iterate: Callable[[int, np.ndarray], None] | None = None,
        tolerance: float = 0.0,
        window: int = 10,
    ) -> _Outcome:
        """Run L-BFGS-B from ``x0`` until the iteration count reaches ``until``.

        Args:
            until: The count to reach (iterations are counted on from ``done``).
            done: Iterations done before (other levels, a resumed run).
            callback: Receives a :class:`Progress` per iteration (``total`` and ``level`` are
                filled in by the caller); returning ``True`` stops.
            on_iterate: Receives ``(iteration, x)`` after each iteration.
            tolerance: Stop once the loss improved by less than this fraction over ``window``
                iterations (0: never).
            window: See ``tolerance``.
        """
        start = time.perf_counter()
        stopped = "iterations"
        seen: list[float] = []

        def on_iteration(intermediate_result: scipy.optimize.OptimizeResult) -> None:
            nonlocal stopped
            loss = float(intermediate_result.fun)
            c, s, t = (float(v) for v in self._parts.get(loss, np.full(3, np.nan)))
            n = done + len(seen) + 1
            seen.append(loss)
            self.current = intermediate_result.x
            if on_iterate is not None:
                on_iterate(n, intermediate_result.x)
            if callback is not None and callback(Progress(n, until, loss, c, s, t, time.perf_counter() - start)):
                stopped = "callback"
                raise StopIteration
            if tolerance > 0 and len(seen) > window and seen[-window - 1] - loss < tolerance * abs(seen[-window - 1]):
                stopped = "tolerance"
                raise StopIteration

        res = scipy.optimize.minimize(
            self.evaluate,
            self.x0.ravel().astype(np.float64),
            jac=True,
            method="L-BFGS-B",
            callback=on_iteration,
            options={"maxiter": max(1, until - done), "maxcor": self.lbfgs_memory},
        )
        if stopped == "iterations" and len(seen) < until - done:
            stopped = "converged"  # L-BFGS's own criteria ended it first
        final = self._parts.get(float(res.fun))
        if final is None:  # the optimizer returned a point whose parts we did not keep
            final = self._parts[self.evaluate(res.x)[0]]
        return _Outcome(x=res.x, fun=float(res.fun), parts=final, stopped=stopped, nit=len(seen))

    def optimize(self, iterations: int, callback: ProgressCallback | None = None, start: float | None = None) -> Result:
        """Run this one level for ``iterations`` and return its :class:`Result` (for benchmarks and tests)."""
        start = time.perf_counter() if start is None else start
        history: list[Progress] = []

        def record(p: Progress) -> bool | None:
            p = Progress(
                p.iteration, iterations, p.loss, p.content_loss, p.style_loss, p.tv_loss, time.perf_counter() - start
            )
            history.append(p)
            return callback(p) if callback is not None else None

        out = self.minimize(iterations, 0, record)
        c, s, t = (float(v) for v in out.parts)
        return Result(
            self.finish(out.x),
            float(out.fun),
            c,
            s,
            t,
            iterations=len(history),
            evaluations=self.evaluations,
            seconds=time.perf_counter() - start,
            stopped=out.stopped,
            history=history,
        )


def _local_devices() -> list[str]:
    """Every local GPU, else the logical CPU devices (one unless the CPU was split)."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def _upsampled(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A preprocessed image resized (bicubic) to ``size``: the start of the next level."""
    x = np.asarray(x, np.float32).reshape(1, *np.shape(x)[-3:])
    if x.shape[1:3] == size:
        return x
    return tf.image.resize(x, size, method="bicubic").numpy().astype(np.float32)


def _blend(styles: Sequence[np.ndarray], blend: Sequence[float] | None) -> list[float]:
    if not styles:
        raise InvalidJob("style", "at least one style image is needed")
    if blend is None:
        return [1.0 / len(styles)] * len(styles)
    if len(blend) != len(styles) or any(not np.isfinite(w) or w < 0 for w in blend) or sum(blend) <= 0:
        raise InvalidJob("style", "needs one non-negative blend weight per style image, not all zero")
    return [w / sum(blend) for w in blend]


def _style_terms(
    per_style: Sequence[Sequence[losses.StyleTarget]],
    blend: Sequence[float],
    params: Params,
    found: Sequence[masks.Region] | None,
    size: tuple[int, int],
) -> tuple[list[losses.StyleTarget], tf.Tensor, list[np.ndarray]]:
    """The style terms of one level: their targets, weights and masks (:mod:`worker.nst.masks`).

    Without regions: one term per style layer, the styles' statistics blended, no masks. With
    them: one term per region and layer (region-major), each with the region's blended
    statistics, the layer's weight times the region's weight and share, and its mask there.
    """
    layers = params.style_layers
    if found is None:
        targets = [losses.blend([t[i] for t in per_style], blend) for i in range(len(layers))]
        return targets, tf.constant(params.layer_weights, tf.float32), []
    targets, weights, region_masks = [], [], []
    for region, level_mask in zip(found, masks.at_level(found, size)):
        for i, layer in enumerate(layers):
            targets.append(losses.blend([per_style[k][i] for k in region.styles], region.blend))
            layer_mask = masks.at_layer(level_mask, tiling.scale_of(layer))
            region_masks.append(layer_mask)
            weights.append(params.layer_weights[i] * region.weight * masks.share(layer_mask))
    return targets, tf.constant(weights, tf.float32), region_masks


def _check_masks(
    style_masks: Sequence[np.ndarray | None] | None, blend: Sequence[float], content_hw: tuple[int, int]
) -> None:
    """Refuse masks that do not fit.

    Not one per style, another aspect than the content's, or black everywhere for every style that
    has weight (a style of weight 0 has no term).
    """
    if style_masks is None:
        return
    if len(style_masks) != len(blend):
        raise InvalidJob("style", f"{len(style_masks)} masks for {len(blend)} style images: one per style, in order")
    for i, m in enumerate(style_masks):
        if m is not None:
            masks.check(m, content_hw, f"style[{i}].mask")
    weighed = [i for i, w in enumerate(blend) if w > 0]
    black = [i for i in weighed if (m := style_masks[i]) is not None and not np.any(m > 0)]
    if black == weighed:
        names = ", ".join(f"style[{i}].mask" for i in weighed)
        raise ImageError(f"{names}: every mask is black everywhere, so no style would apply anywhere")


def _checked(rgb: np.ndarray, name: str) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError(f"{name}: expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    return rgb


def _resized(rgb: np.ndarray, size: Sequence[int] | None, params: Params, name: str) -> np.ndarray:
    _checked(rgb, name)
    if size is not None:
        rgb = np.asarray(images.resize(Image.fromarray(rgb), tuple(size)))
    need = vgg.min_side_px(tuple(params.content_layers) + tuple(params.style_layers))
    if min(rgb.shape[:2]) < need:
        raise ImageError(
            f"{name}: {rgb.shape[1]}x{rgb.shape[0]} px is too small for the layers used (each side needs >= {need} px)"
        )
    return rgb
