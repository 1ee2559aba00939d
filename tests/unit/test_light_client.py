"""The producer side must install and run without TensorFlow."""

import subprocess
import sys


def test_importing_every_producer_module_does_not_import_tensorflow() -> None:
    """Every module under producer/ (walked, not listed), and the modules of the worker's commands
    (their ``--help`` works on a light install), import without TensorFlow, NumPy, SciPy or PIL."""
    code = (
        "import importlib, importlib.metadata as md, pkgutil, sys, producer\n"
        "walk = pkgutil.walk_packages(producer.__path__, 'producer.')\n"
        "names = [m.name for m in walk if not m.name.endswith('__main__')]\n"
        "names += [ep.value.split(':')[0] for ep in md.entry_points(group='stylequeue.commands')]\n"
        "assert len(names) > 30 and 'worker.cli.stylize' in names, names\n"
        "for name in names: importlib.import_module(name)\n"
        "import producer.client, producer.api.app, producer.cli\n"
        "from producer.core.settings import Settings\n"
        "producer.client.Client(Settings())\n"
        "producer.api.app.create_app(Settings())  # the HTTP API is light too\n"
        "producer.cli.build_parser().parse_args(['submit', 's3://a/b.png', 's3://a/c.png'])\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'scipy', 'numpy', 'PIL') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_public_imports_of_earlier_releases_still_work() -> None:
    from producer.client import Client
    from producer.core.params import Params as CoreParams
    from producer.params import Params

    assert Params is CoreParams and Client.__module__ == "producer.client"


def test_help_lists_commands_without_tensorflow() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "producer.cli", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "stylize" in proc.stdout
