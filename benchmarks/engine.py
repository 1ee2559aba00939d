"""Engine vs. a faithful port of the seed tutorial, side by side in one run.

The seed port does what the tutorial does, in TF2: content, style and generated images are
concatenated into one batch of three and pushed through the *whole* VGG19 base (up to
block5_pool) at every evaluation, with the same losses; the gradient is taken w.r.t. the
generated image only. Both are compiled with ``tf.function`` and driven by the same scipy
L-BFGS-B, from the same start, with the same weights and images.

Printed per size: seconds per loss+gradient evaluation of each and their ratio; the final loss of
each after N iterations (they optimize the same objective, so they must agree closely); the
engine's achieved conv GFLOP/s next to a lone 3×3 convolution's GFLOP/s measured in this run.

Usage::

    python benchmarks/engine.py                 # ImageNet weights and photos from ../shared if there
    python benchmarks/engine.py --sizes 128 256 --iterations 20 --repeats 10
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import scipy.optimize
import tensorflow as tf

from producer.params import VGG19_CONV_LAYERS, Params
from worker import images, losses, vgg
from worker.engine import Engine, preprocess

SHARED = Path(__file__).resolve().parents[2] / "shared"
# Output channels of each VGG19 conv layer; the input of each is the previous one's (3 for the first).
CHANNELS = dict(zip(VGG19_CONV_LAYERS, [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8))


def seed_port(weights: str, params: Params, content: np.ndarray, style: np.ndarray):  # type: ignore[no-untyped-def]
    """The tutorial's loss and gradient: batch of 3 through the full VGG19 at every call."""
    base = keras.applications.VGG19(include_top=False, weights=weights, input_shape=(None, None, 3))
    outputs = {layer.name: layer.output for layer in base.layers}
    names = list(params.content_layers) + list(params.style_layers)
    full = keras.Model(base.input, [outputs[n] for n in names] + [base.output])  # runs to block5_pool
    fixed = tf.constant(np.concatenate([preprocess(content), preprocess(style)]))
    h, w = content.shape[:2]
    n_c = len(params.content_layers)

    @tf.function
    def loss_and_grad(x):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            tape.watch(x)
            feats = full(tf.concat([fixed, x], axis=0), training=False)[:-1]
            loss = tf.constant(0.0)
            for f in feats[:n_c]:
                loss += params.content_weight * tf.reduce_sum(tf.square(f[2] - f[0]))
            for f, lw in zip(feats[n_c:], params.layer_weights):
                s, g = losses.raw_gram(f[1:2]), losses.raw_gram(f[2:3])
                loss += params.style_weight * lw * tf.reduce_sum(tf.square(s - g)) / (4.0 * 9 * (h * w) ** 2)
            a = tf.square(x[:, : h - 1, : w - 1, :] - x[:, 1:, : w - 1, :])
            b = tf.square(x[:, : h - 1, : w - 1, :] - x[:, : h - 1, 1:, :])
            loss += params.tv_weight * tf.reduce_sum(tf.pow(a + b, params.tv_power))
        return loss, tape.gradient(loss, x)

    def evaluate(flat: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grad = loss_and_grad(tf.constant(flat.reshape(1, h, w, 3), tf.float32))
        return float(loss), grad.numpy().astype(np.float64).ravel()

    return evaluate


def conv_gflop(layers: tuple[str, ...], h: int, w: int) -> float:
    """Forward conv GFLOP of VGG19 up to the deepest of ``layers`` for an h×w image."""
    flop, c_in = 0.0, 3
    for name in VGG19_CONV_LAYERS[: VGG19_CONV_LAYERS.index(vgg.deepest(layers)) + 1]:
        block = int(name[5])
        hh, ww = h // 2 ** (block - 1), w // 2 ** (block - 1)
        flop += 2.0 * hh * ww * 9 * c_in * CHANNELS[name]
        c_in = CHANNELS[name]
    return flop / 1e9


def conv_rate(h: int, w: int, c: int, repeats: int) -> float:
    """GFLOP/s of one 3×3 'same' convolution c→c on an h×w map, forward only."""
    x = tf.random.normal((1, h, w, c))
    k = tf.random.normal((3, 3, c, c))
    f = tf.function(lambda x: tf.nn.relu(tf.nn.conv2d(x, k, 1, "SAME")))
    f(x).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        f(x).numpy()
    return 2.0 * h * w * 9 * c * c * repeats / (time.perf_counter() - start) / 1e9


def timed(fn, x: np.ndarray, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn(x)  # trace and warm up
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return (time.perf_counter() - start) / repeats


def lbfgs(fn, x0: np.ndarray, iterations: int) -> float:  # type: ignore[no-untyped-def]
    res = scipy.optimize.minimize(
        fn, x0.ravel().astype(np.float64), jac=True, method="L-BFGS-B", options={"maxiter": iterations}
    )
    return float(res.fun)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--iterations", type=int, default=10, help="L-BFGS iterations for the loss check")
    parser.add_argument("--repeats", type=int, default=5, help="timed evaluations per measurement")
    parser.add_argument("--weights", default=None, help="VGG19 weights file (default: ../shared, else random)")
    args = parser.parse_args()

    shared_w = SHARED / "vgg19" / "vgg19_imagenet_notop.weights.h5"
    weights = args.weights or (
        str(shared_w) if shared_w.exists() else vgg.save_random_weights(Path(tempfile.mkdtemp()) / "r.weights.h5")
    )
    if (SHARED / "images" / "tubingen.jpg").exists():
        content_full = images.load((SHARED / "images" / "tubingen.jpg").read_bytes())
        style_full = images.load((SHARED / "images" / "starry_night.jpg").read_bytes())
    else:
        rng = np.random.default_rng(0)
        content_full = rng.integers(0, 256, (384, 512, 3), dtype=np.uint8)
        style_full = rng.integers(0, 256, (384, 512, 3), dtype=np.uint8)
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, GPUs: {len(tf.config.list_physical_devices('GPU'))}")
    print(f"weights: {weights}")
    engine = Engine(weights=weights)

    for size in args.sizes:
        params = Params(size=(size, size), iterations=args.iterations)
        content = images.resize(images.Image.fromarray(content_full), (size, size))
        style = images.resize(images.Image.fromarray(style_full), (size, size))
        c_arr, s_arr = np.asarray(content), np.asarray(style)
        problem = engine.prepare(c_arr, [s_arr], params)
        seed_eval = seed_port(weights, params, c_arr, s_arr)
        x0 = problem.x0.ravel().astype(np.float64)

        t_seed = timed(seed_eval, x0, args.repeats)
        t_eng = timed(problem.evaluate, x0, args.repeats)
        flop = 2 * conv_gflop(tuple(params.content_layers) + tuple(params.style_layers), size, size)
        mid = size // 4  # block 3: the 256-channel convs carry the largest share of the FLOPs
        ref = conv_rate(mid, mid, 256, args.repeats * 4)
        rate = flop / t_eng
        loss_seed = lbfgs(seed_eval, x0, args.iterations)
        loss_eng = lbfgs(problem.evaluate, x0, args.iterations)

        print(f"\n== {size}x{size}, {args.iterations} L-BFGS iterations ==")
        print(f"seconds/evaluation   seed port {t_seed:8.4f}   engine {t_eng:8.4f}   speedup {t_seed / t_eng:5.2f}x")
        print(
            f"final loss           seed port {loss_seed:12.6g}   engine {loss_eng:12.6g}   "
            f"rel. diff {abs(loss_seed - loss_eng) / abs(loss_seed):.2e}"
        )
        print(
            f"conv GFLOP/eval {flop:.1f} (forward + input gradient)   engine {rate:7.1f} GFLOP/s   "
            f"3x3 conv {mid}x{mid}x256 {ref:7.1f} GFLOP/s   ratio {rate / ref:.2f}"
        )


if __name__ == "__main__":
    main()
