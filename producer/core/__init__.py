"""The contract: what every side shares (job, params, states, errors, settings, access). No I/O."""
