"""Keep freed memory in the process: glibc's malloc settings for repeated XLA:CPU calls.

XLA:CPU takes each call's scratch buffer from malloc and frees it afterwards (445 MB for a
paper-size train step at N = 1000). glibc serves blocks this large with a fresh ``mmap`` and
returns them with ``munmap``, so every call page-faults its whole buffer again and the
kernel zero-fills it: 108 690 minor faults per train step, about a third of the step's CPU
time on 2 cores (README, "Where a step's time goes"). With one malloc arena, no ``mmap`` for
large blocks and no trimming of the heap, the freed buffer stays mapped and the next call
reuses it: no faults per step, 10–20 % less wall time per step on 2 cores.

The price is paid once: with one arena, XLA's compiler threads contend for it, so compiling
the paper-size train step takes about 3.5 s longer (11 s instead of 7.5 s on 2 cores). It
pays over many steps, so the command-line tools that train call :func:`keep_freed_memory`
at start (``--no-memory-reuse`` keeps glibc's defaults) and those that only predict or
minimise do not. Importing :mod:`eignn_jax` changes nothing; a pipeline of your own calls
it if it wants the same.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["TRIM_THRESHOLD", "keep_freed_memory"]

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

TRIM_THRESHOLD = 2**31 - 1
"""Bytes of free memory at the top of the heap above which glibc would still return it to
the system: the largest value mallopt accepts (it takes a C int), 2 GiB."""


def keep_freed_memory() -> bool:
    """Make this process's malloc keep freed memory for reuse instead of unmapping it.

    Sets, through glibc's ``mallopt``: one arena for all threads (``M_ARENA_MAX`` 1), no
    ``mmap`` for large blocks (``M_MMAP_MAX`` 0, so they come from the heap) and no trimming
    below :data:`TRIM_THRESHOLD` (``M_TRIM_THRESHOLD``): what
    ``GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=…``
    does at start-up. It applies to later allocations; call it before JAX's first
    computation, so that XLA's threads start in the one arena.

    Cost: memory freed by the process is kept until it exits, so its resident memory stays
    near its peak, and the peak can be a little higher (6.87 against 6.55 GiB for the
    10⁶-particle forward pass); compilation is slower (module docstring). Returns True if
    glibc accepted all three settings, False where the C library is not glibc (nothing is
    then changed).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = [(_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
