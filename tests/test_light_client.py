"""The producer side must install and run without TensorFlow."""

import subprocess
import sys


def test_importing_producer_does_not_import_tensorflow() -> None:
    code = (
        "import sys, producer, producer.cli, producer.params, producer.settings, producer.errors\n"
        "producer.cli.build_parser().parse_args(['samples'])\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'scipy', 'numpy', 'PIL') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_help_lists_commands_without_tensorflow() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "producer.cli", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "stylize" in proc.stdout
