"""stylequeue's light client: job contract, settings, errors and the ``stylequeue`` CLI (no TensorFlow)."""
