"""The real ``stylequeue`` command, run as a subprocess like a user would."""

import re
from pathlib import Path

import numpy as np
import pytest
from support.images import png_bytes, random_rgb
from support.processes import cli

from worker.nst import images

run = cli


@pytest.fixture
def pair(tmp_path: Path) -> tuple[str, str]:
    content, style = tmp_path / "c.png", tmp_path / "s.jpg"
    content.write_bytes(png_bytes(random_rgb(48, 64, 1)))
    style.write_bytes(png_bytes(random_rgb(40, 40, 2), fmt="JPEG"))
    return str(content), str(style)


@pytest.mark.slow
def test_stylize_writes_the_image(tmp_path: Path, pair: tuple[str, str], weights_file: str) -> None:
    out = tmp_path / "out" / "result.webp"
    proc = run(
        "stylize",
        *pair,
        pair[1],
        "-o",
        str(out),
        "--size",
        "48",
        "--iterations",
        "3",
        "--weights",
        weights_file,
        "--style-blend",
        "2,1",
        "--color",
        "preserve",
        "--seed",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    assert "final loss" in proc.stdout and "s/iteration" in proc.stdout
    assert "3/3" in proc.stderr  # progress bar
    # Nothing but the progress bar on the terminal: TensorFlow's start-up lines are kept off it.
    assert all(re.match(r"\[[#.]+\] \d+/\d+ ", line) for line in proc.stderr.splitlines() if line.strip()), proc.stderr
    arr = images.load(out.read_bytes())
    assert arr.shape == (36, 48, 3)


@pytest.mark.slow
def test_weights_from_environment_and_sha_mismatch(tmp_path: Path, pair: tuple[str, str], weights_file: str) -> None:
    proc = run(
        "stylize",
        *pair,
        "-o",
        str(tmp_path / "o.png"),
        "--size",
        "32",
        "--iterations",
        "1",
        "-q",
        env={"STYLEQUEUE_WEIGHTS": weights_file, "STYLEQUEUE_WEIGHTS_SHA256": "ab" * 32},
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("stylequeue: error: VGG19 weights")
    assert "expected abab" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("missing", "no such file"),
        ("empty", "empty file"),
        ("text", "not an image"),
    ],
)
def test_bad_files_give_one_line(tmp_path: Path, pair: tuple[str, str], bad: str, message: str) -> None:
    path = tmp_path / f"{bad}.png"
    if bad == "empty":
        path.write_bytes(b"")
    elif bad == "text":
        path.write_text("hello")
    proc = run("stylize", str(path), pair[1], "-o", str(tmp_path / "o.png"))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("stylequeue: error:")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--iterations", "-3"], "--iterations: -3 is out of range"),
        (["--size", "big"], "is not a size"),
        (["--content-layers", "block9_conv9"], "not a VGG19 conv layer"),
        (["-o", "x.gif"], "png, jpeg or webp"),
    ],
)
def test_bad_arguments(tmp_path: Path, pair: tuple[str, str], args: list[str], message: str) -> None:
    out = [] if "-o" in args else ["-o", str(tmp_path / "o.png")]
    proc = run("stylize", *pair, *out, *args)
    assert proc.returncode in (1, 2)
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_samples(tmp_path: Path) -> None:
    proc = run("samples", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    content = images.load((tmp_path / "content.png").read_bytes())
    style = images.load((tmp_path / "style.png").read_bytes())
    assert content.shape == (288, 384, 3) and style.shape == (320, 320, 3)
    assert content.std() > 20 and np.unique(style.reshape(-1, 3), axis=0).shape[0] > 5


@pytest.mark.slow
def test_stylize_with_levels_and_snapshots(tmp_path: Path, pair: tuple[str, str], weights_file: str) -> None:
    out = tmp_path / "r.png"
    proc = run(
        "stylize",
        *pair,
        "-o",
        str(out),
        "--size",
        "48",
        "--iterations",
        "2",
        "--scales",
        "2",
        "--scale-iterations",
        "2",
        "--save-every",
        "2",
        "--color",
        "luminance",
        "--weights",
        weights_file,
    )
    assert proc.returncode == 0, proc.stderr
    assert "level 1/2" in proc.stderr and "level 2/2" in proc.stderr
    assert sorted(p.name for p in tmp_path.glob("r.*.png")) == ["r.0002.png", "r.0004.png"]
    assert images.load((tmp_path / "r.0002.png").read_bytes()).shape[:2] == (25, 34)  # the first level: 36x48 / sqrt(2)
    assert images.load(out.read_bytes()).shape == (36, 48, 3)


@pytest.mark.slow
def test_stylize_with_a_mask_per_style(tmp_path: Path, pair: tuple[str, str], weights_file: str) -> None:
    """Two styles, each where its mask is white (one file given for the first, 'none' for none)."""
    left = np.zeros((24, 32, 3), np.uint8)
    left[:, :16] = 255
    mask = tmp_path / "left.png"
    mask.write_bytes(png_bytes(left))
    out = tmp_path / "r.png"
    common = ["-o", str(out), "--size", "48", "--iterations", "2", "--weights", weights_file]
    proc = run("stylize", *pair, pair[1], "--style-mask", str(mask), "--style-mask", "none", *common)
    assert proc.returncode == 0, proc.stderr
    assert images.load(out.read_bytes()).shape == (36, 48, 3)

    proc = run("stylize", *pair, pair[1], "--style-mask", str(mask), *common)  # one mask for two styles
    assert proc.returncode == 1 and "--style-mask: given 1 times for 2 style images" in proc.stderr
    square = tmp_path / "square.png"
    square.write_bytes(png_bytes(np.zeros((32, 32, 3), np.uint8)))
    proc = run("stylize", *pair, "--style-mask", str(square), *common)
    assert proc.returncode == 1 and "does not have the content image's aspect ratio" in proc.stderr
    assert "Traceback" not in proc.stderr
