"""Keeping freed memory (``eignn_jax.allocator``): large buffers are reused, not re-mapped."""

import argparse
import subprocess
import sys

import pytest

from eignn_jax import allocator
from experiments import common

# A child process allocates, writes and frees a 64 MiB buffer with malloc ten times, as
# XLA:CPU does with its scratch buffer on every call, and prints the minor page faults of the
# last nine rounds. (Not through numpy, which asks for huge pages for large arrays.)
CHILD = """
import ctypes, resource, sys
from eignn_jax import allocator
if sys.argv[1] == "keep":
    assert allocator.keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 64 * 2**20
def round_trip():
    buffer = libc.malloc(size)
    ctypes.memset(buffer, 1, size)
    libc.free(buffer)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_trip()
before = faults()
for _ in range(9):
    round_trip()
print(faults() - before)
"""


def faults_of_reallocation(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    pages = 9 * 64 * 2**20 // 4096
    # glibc's default: every round maps the buffer afresh and faults in all its pages.
    assert faults_of_reallocation("default") > 0.9 * pages
    # Kept: the rounds reuse the first round's memory, already faulted in.
    assert faults_of_reallocation("keep") < 0.01 * pages


@pytest.mark.parametrize("training, flag, expected_calls",
                         [(True, [], 1), (True, ["--no-memory-reuse"], 0), (False, [], 0)])
def test_tools_that_train_keep_freed_memory_unless_told_not_to(training, flag, expected_calls, monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    parser = argparse.ArgumentParser()
    common.add_runtime_arguments(parser, training=training)
    common.start_runtime(parser.parse_args(flag + ["--no-compilation-cache"]))
    assert len(calls) == expected_calls
