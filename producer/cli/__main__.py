"""``python -m producer.cli``: the ``stylequeue`` command."""

import sys

from producer.cli import main

sys.exit(main())
