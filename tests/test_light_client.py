"""The producer side must install and run without TensorFlow."""

import subprocess
import sys


def test_importing_producer_does_not_import_tensorflow() -> None:
    code = (
        "import sys, producer, producer.cli, producer.params, producer.settings, producer.errors\n"
        "import producer.client, producer.cli.jobs, producer.contract, producer.storage, producer.app\n"
        "import producer.cli.options, producer.cli.stylize, producer.cli.operate, producer.cli.dev, producer.schema\n"
        "import producer.queues, producer.exporter, producer.devstack, producer.wire, producer.registry\n"
        "import producer.keys, producer.states, producer.formats, producer.access, producer.retrying\n"
        "import producer.broker, producer.deadletters, producer.events, producer.webhooks, producer.cancellation\n"
        "import producer.api.app, producer.notifier, producer.cli.api\n"
        "producer.client.Client(producer.settings.Settings())\n"
        "producer.api.app.create_app(producer.settings.Settings())  # the HTTP API is light too\n"
        "producer.cli.build_parser().parse_args(['submit', 's3://a/b.png', 's3://a/c.png'])\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'scipy', 'numpy', 'PIL') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_help_lists_commands_without_tensorflow() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "producer.cli", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "stylize" in proc.stdout
