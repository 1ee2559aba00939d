"""What this host offers a worker: the GPUs it may use and the memory one job may take.

The engine (:mod:`worker.nst`) never probes the host; the runtime asks here and hands the engine a
memory limit.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

#: Share of the machine's memory one job may use when no limit is set.
MACHINE_SHARE = 0.8


def visible_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES``, else the NVIDIA driver's list."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
    except OSError:
        return []


def machine_limit_bytes() -> int:
    """What one job may use here when ``STYLEQUEUE_MAX_JOB_MEMORY_BYTES`` is not set.

    A share of the visible GPU's memory, else of the RAM (the cgroup's limit inside a container);
    0 if unknown.
    """
    gpu = _gpu_memory_bytes()
    total = gpu or _ram_bytes()
    return int(total * MACHINE_SHARE)


def _gpu_memory_bytes() -> int:
    gpus = visible_gpus()
    smi = shutil.which("nvidia-smi")
    if not gpus or smi is None:
        return 0
    try:
        out = subprocess.run(
            [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", gpus[0]],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return int(float(out.strip().splitlines()[0])) * 1024 * 1024
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        log.warning("GPU memory unknown (%s): no memory limit from the GPU", e)
        return 0


def _ram_bytes() -> int:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0
