"""Engine vs. a faithful port of the seed tutorial and a PyTorch peer, side by side in one run.

The seed port does what the tutorial does, in TF2: content, style and generated images are
concatenated into one batch of three and pushed through the *whole* VGG19 base (up to
block5_pool) at every evaluation, with the same losses; the gradient is taken w.r.t. the
generated image only. The PyTorch peer is what the PyTorch tutorial does: targets computed once,
only the generated image through VGG19 (the same weights, converted) up to the deepest loss
layer, the same objective; in float32 and under ``torch.autocast("cpu", bfloat16)`` (skipped when
torch is not installed: ``pip install torch==2.13.0``). The engine runs in float32 and bfloat16.
All are driven by the same scipy L-BFGS-B, from the same start, with the same weights and images.

Printed per size: seconds per loss+gradient evaluation of each and the ratios; beside each engine
precision, the *bare* network's rate (:func:`bare_network`: the same cut VGG19, forward to the
deepest loss layer and back to the input, same precision and size, no loss) and engine / bare;
``--breakdown``: where the engine's time beyond the bare network goes (:func:`breakdown`); the final loss of
each engine precision and of the seed port after N iterations (the same objective, so they must
agree closely); which precision ``auto`` picks here; the engine's conv GFLOP/s next to a lone 3×3
convolution's. ``--images DIR`` also writes the float32 and bfloat16 results.

Usage::

    python benchmarks/engine.py                 # ImageNet weights and photos from ../shared if there
    python benchmarks/engine.py --sizes 256 --iterations 100 --repeats 5 --images docs/precision
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import inputs
import keras
import numpy as np
import scipy.optimize
import tensorflow as tf

from producer.core.params import CHANNELS, VGG19_CONV_LAYERS, Params
from worker.nst import images, losses, vgg
from worker.nst.engine import Engine, preprocess


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


def torch_peer(weights: str, params: Params, content: np.ndarray, style: np.ndarray, autocast: bool):  # type: ignore[no-untyped-def]
    """The PyTorch tutorial's way, same objective: None when torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    base = keras.applications.VGG19(include_top=False, weights=weights, input_shape=(None, None, 3))
    deepest = max(VGG19_CONV_LAYERS.index(n) for n in (*params.content_layers, *params.style_layers))
    layers: list = []
    names: list[str] = []
    for layer in base.layers[1:]:
        if layer.name.endswith("_pool"):
            layers.append(torch.nn.MaxPool2d(2))
        else:
            kernel, bias = layer.get_weights()
            conv = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], 3, padding=1)
            conv.weight.data = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
            conv.bias.data = torch.from_numpy(bias.copy())
            layers += [conv, torch.nn.ReLU()]
        names.append(layer.name)
        if layer.name == VGG19_CONV_LAYERS[deepest]:
            break
    for p in (q for m in layers for q in m.parameters()):
        p.requires_grad_(False)
    wanted = list(params.content_layers) + list(params.style_layers)

    def features(x):  # type: ignore[no-untyped-def]
        out, i = {}, 0
        for name in names:
            if name.endswith("_pool"):
                x = layers[i](x)
                i += 1
            else:
                x = layers[i + 1](layers[i](x))
                i += 2
                out[name] = x
        return [out[n].float() for n in wanted]

    def nchw(rgb: np.ndarray):  # type: ignore[no-untyped-def]
        return torch.from_numpy(preprocess(rgb).transpose(0, 3, 1, 2).copy())

    def gram(f):  # type: ignore[no-untyped-def]
        flat = f.reshape(f.shape[1], -1)
        return flat @ flat.T

    n_c = len(params.content_layers)
    h, w = content.shape[:2]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        content_t = [f.detach() for f in features(nchw(content))[:n_c]]
        style_t = [gram(f).detach() for f in features(nchw(style))[n_c:]]

    def evaluate(flat: np.ndarray) -> tuple[float, np.ndarray]:
        x = torch.from_numpy(flat.reshape(1, h, w, 3).astype(np.float32).transpose(0, 3, 1, 2).copy()).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            feats = features(x)
        loss = sum(params.content_weight * ((f - t) ** 2).sum() for f, t in zip(feats[:n_c], content_t))
        for f, t, lw in zip(feats[n_c:], style_t, params.layer_weights):
            loss = loss + params.style_weight * lw * ((t - gram(f)) ** 2).sum() / (4.0 * 9 * (h * w) ** 2)
        a = (x[:, :, : h - 1, : w - 1] - x[:, :, 1:, : w - 1]) ** 2
        b = (x[:, :, : h - 1, : w - 1] - x[:, :, : h - 1, 1:]) ** 2
        loss = loss + params.tv_weight * ((a + b) ** params.tv_power).sum()
        loss.backward()
        grad = x.grad.numpy().transpose(0, 2, 3, 1)
        return float(loss.detach()), grad.astype(np.float64).ravel()

    return evaluate


def bare_network(weights: str, params: Params, precision: str):  # type: ignore[no-untyped-def]
    """VGG19 cut after the deepest loss layer, forward and back to the input: what no loss can beat.

    The gradient of the deepest layer's output (upstream ones) w.r.t. the input, in ``precision``
    (Keras' ``mixed_bfloat16`` for bfloat16, as the engine's model), from a float32 tensor.
    """
    deepest = vgg.deepest(tuple(params.content_layers) + tuple(params.style_layers))
    model = vgg.feature_model(weights, (deepest,), None, precision)

    @tf.function
    def forward_backward(x):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = model(x, training=False)
            out = out[0] if isinstance(out, (list, tuple)) else out
        return tape.gradient(out, x, output_gradients=tf.ones_like(out))

    return lambda x: forward_backward(x).numpy()


def breakdown(engine: Engine, params: Params, c_arr: np.ndarray, s_arr: np.ndarray, repeats: int) -> None:
    """Where an evaluation's time goes beyond the bare network, each piece timed alone.

    ``graph``: the engine's compiled loss and gradient from a float32 tensor to tensors;
    ``host``: what :meth:`Problem.evaluate` adds (float64 to a float32 tensor and the gradient
    back); ``loss head``: the losses and their gradient w.r.t. given features (casts included):
    content, style (Gram matrices), tv; their gradients are copied to the host, which the engine
    does not do (it feeds them to the network), so these are upper bounds; ``L-BFGS``: scipy's
    own work per iteration at this size (a quadratic objective that costs nothing).
    """
    problem = engine.prepare(c_arr, [s_arr], params)
    x = tf.constant(problem.x0, tf.float32)
    n_c = len(params.content_layers)
    model = engine._model(params)
    feats = model(x, training=False)
    content = engine._features(params, c_arr)[:n_c]
    targets = [losses.style_target(f) for f in engine._features(params, s_arr)[n_c:]]
    layer_weights = tf.constant(params.layer_weights, tf.float32)
    pixels = tf.constant(float(x.shape[1] * x.shape[2]))
    tv_power = tf.constant(params.tv_power, tf.float32)
    a = (
        content,
        targets,
        tf.constant([params.content_weight, params.style_weight, params.tv_weight], tf.float32),
        layer_weights,
        tv_power,
    )
    loss_fn = engine._loss_fn(params)

    @tf.function
    def head(feats, x, which):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            tape.watch(feats)
            tape.watch(x)
            f32 = [tf.cast(f, tf.float32) for f in feats]
            parts = {
                "content": lambda: losses.content_loss(f32[:n_c], content, False),
                "style": lambda: losses.style_loss(f32[n_c:], targets, layer_weights, pixels, False, "gram"),
                "tv": lambda: losses.total_variation(x, tv_power, False),
            }
            loss = tf.add_n([parts[w]() for w in which])
        return tape.gradient(loss, (feats, x), unconnected_gradients="zero")

    def run(which: tuple[str, ...]):  # type: ignore[no-untyped-def]
        return lambda _: [[g.numpy() for g in gs] for gs in head(list(feats), x, which)]

    n = int(np.prod(problem.x0.shape))
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 2.0, n)

    def quadratic(v: np.ndarray) -> tuple[float, np.ndarray]:
        return float(0.5 * np.dot(scale * v, v)), scale * v

    def lbfgs_alone(_: object) -> float:
        v0 = rng.standard_normal(n)
        start = time.perf_counter()
        out = scipy.optimize.minimize(
            quadratic, v0, jac=True, method="L-BFGS-B", options={"maxiter": 10, "maxcor": params.lbfgs_memory}
        )
        quadratic_s = fastest(lambda _: quadratic(v0), None, 3) * out.nfev
        return (time.perf_counter() - start - quadratic_s) / max(out.nfev, 1)

    flat = problem.x0.ravel().astype(np.float64)
    total, parts, grad = loss_fn(x, *a)

    def host(v: np.ndarray) -> None:  # what Problem.evaluate does around the graph
        tf.constant(v.reshape(problem.x0.shape), tf.float32)
        float(total), parts.numpy(), grad.numpy().astype(np.float64).ravel()

    rows = {
        "engine graph (tensor in, tensors out)": fastest(lambda _: [t.numpy() for t in loss_fn(x, *a)], flat, repeats),
        "host side (float64 <-> tensors)": fastest(host, flat, 3 * repeats),
        "loss head: content+style+tv": fastest(run(("content", "style", "tv")), flat, 3 * repeats),
        "loss head: style (Gram) alone": fastest(run(("style",)), flat, 3 * repeats),
        "loss head: content alone": fastest(run(("content",)), flat, 3 * repeats),
        "loss head: tv alone": fastest(run(("tv",)), flat, 3 * repeats),
        "L-BFGS-B's own work per evaluation": min(lbfgs_alone(None) for _ in range(3)),
    }
    for name, t in rows.items():
        print(f"  {name:40} {t * 1e3:9.1f} ms")


def fastest(fn, x, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """The fastest of ``repeats`` calls, after a warm-up: a piece's cost on a machine others share."""
    fn(x)
    best = float("inf")
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - start)
    return best


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
    """Seconds per call, after a warm-up call.

    A call over 20 s (the emulated bfloat16 peers on a CPU without native bf16) is timed once, for
    the run to end in minutes.
    """
    fn(x)  # trace and warm up
    start = time.perf_counter()
    fn(x)
    if time.perf_counter() - start > 20.0:
        return time.perf_counter() - start
    for _ in range(repeats - 1):
        fn(x)
    return (time.perf_counter() - start) / max(repeats, 1)


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
    parser.add_argument("--images", default=None, help="write the float32 and bfloat16 results here (PNG)")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--breakdown", action="store_true", help="time the engine's pieces beyond the network")
    args = parser.parse_args()

    weights = inputs.weights(args.weights)
    content_full, style_full = inputs.pair()
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, GPUs: {len(tf.config.list_physical_devices('GPU'))}")
    print(f"weights: {weights}")
    print(f"precision auto picks here: {vgg.resolve_precision('auto')} (native bfloat16: {vgg.native_bfloat16()})")
    engine = Engine(weights=weights)

    for size in args.sizes:
        content = images.resize(images.Image.fromarray(content_full), (size, size))
        style = images.resize(images.Image.fromarray(style_full), (size, size))
        c_arr, s_arr = np.asarray(content), np.asarray(style)
        base = Params(size=(size, size), iterations=args.iterations)
        problems = {p: engine.prepare(c_arr, [s_arr], base.replace(precision=p)) for p in args.precisions}
        seed_eval = seed_port(weights, base, c_arr, s_arr)
        x0 = next(iter(problems.values())).x0.ravel().astype(np.float64)
        x0_tensor = tf.constant(x0.reshape(1, size, size, 3), tf.float32)

        t_seed = timed(seed_eval, x0, args.repeats)
        t_eng, t_bare = {}, {}
        for p in problems:  # engine and bare network alternate, so a busy machine slows both alike
            bare = bare_network(weights, base, p)
            bare(x0_tensor)
            t_eng[p], t_bare[p] = timed(problems[p].evaluate, x0, args.repeats), timed(bare, x0_tensor, args.repeats)
        peers = {
            name: torch_peer(weights, base, c_arr, s_arr, autocast)
            for name, autocast in (("float32", False), ("bfloat16", True))
        }
        t_peer = {name: timed(fn, x0, args.repeats) for name, fn in peers.items() if fn is not None}
        flop = 2 * conv_gflop(tuple(base.content_layers) + tuple(base.style_layers), size, size)
        mid = size // 4  # block 3: the 256-channel convs carry the largest share of the FLOPs
        ref = conv_rate(mid, mid, 256, args.repeats * 4)
        rate = flop / min(t_eng.values())

        print(f"\n== {size}x{size}: seconds per loss+gradient evaluation ==")
        print(f"seed port (TF2, float32)        {t_seed:8.4f}")
        for p, t in t_eng.items():
            print(
                f"engine {p:9}                {t:8.4f}   {t_seed / t:5.2f}x the seed port   "
                f"bare network {t_bare[p]:8.4f}   engine / bare {t / t_bare[p]:5.3f}"
            )
        for p, t in t_peer.items():
            print(f"PyTorch peer {p:9}          {t:8.4f}   peer / engine's fastest: {t / min(t_eng.values()):5.2f}")
        if not t_peer:
            print("PyTorch peer: torch not installed (pip install torch==2.13.0)")
        print(
            f"conv GFLOP/eval {flop:.1f} (forward + input gradient)   "
            f"engine {min(t_eng, key=t_eng.get)} {rate:7.1f} GFLOP/s   "
            f"3x3 conv {mid}x{mid}x256 {ref:7.1f} GFLOP/s   ratio {rate / ref:.2f}"
        )

        finals = {"seed port": lbfgs(seed_eval, x0, args.iterations)}
        for p in problems:
            result = engine.transfer(c_arr, [s_arr], base.replace(precision=p))
            finals[f"engine {p}"] = result.loss
            if args.images:
                Path(args.images).mkdir(parents=True, exist_ok=True)
                (Path(args.images) / f"{size}-{p}.png").write_bytes(images.encode(result.image, "png"))
        if args.breakdown:
            for p in problems:
                print(f"where an evaluation's time goes, {p} (the bare network: {t_bare[p] * 1e3:.1f} ms):")
                breakdown(engine, base.replace(precision=p), c_arr, s_arr, args.repeats)
        ref_loss = finals.get("engine float32", finals["seed port"])
        print(f"final loss after {args.iterations} L-BFGS iterations (seed preset):")
        for name, loss in finals.items():
            print(f"  {name:16} {loss:12.6g}   vs engine float32: {(loss - ref_loss) / abs(ref_loss):+.2%}")


if __name__ == "__main__":
    main()
