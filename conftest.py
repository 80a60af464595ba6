"""Loaded by every pytest run here, whatever paths it is given: threads per xdist worker."""

import os
import sys


def pytest_configure(config):
    """Give each pytest-xdist worker its share of the cores, and the kernels it starts too.

    torch starts one thread per core. Two workers on two cores, each running a notebook
    kernel with two threads, leave every thread waiting for a partner on a busy core: the
    Meeting-6 notebooks took over 30 minutes under `-n 2` instead of 5. OMP_NUM_THREADS is read
    by torch when it starts, in this worker and in every kernel nbval launches from it; a value
    the user set is kept.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
