"""The memory-bandwidth triad, the roofline fields of the benchmarks, and benchmarks.accelerator."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from benchmarks import accelerator, memory, train_step

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRIAD_KEYS = {"benchmark", "implementation", "device", "n_elements", "array_mib", "counted_bytes_per_call",
              "median_s", "min_s", "gb_s", "best_gb_s", "cpu_s_per_call", "minor_faults_per_call", "repeats"}
SHARED_KEYS = {"benchmark", "platform", "device_kind", "first_s", "median_s", "quick", "load_1min_at_start"}
ROOFLINE_KEYS = {"xla_flops", "xla_bytes_accessed", "xla_temp_bytes", "gflop_s", "triad_gb_s",
                 "memory_roofline_fraction"}


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("implementation", memory.IMPLEMENTATIONS)
def test_the_triad_reports_bandwidth_counting_three_arrays(implementation):
    row = memory.triad_bandwidth(implementation, mib=2, repeats=2, warmup=1)
    assert set(row) == TRIAD_KEYS
    assert row["n_elements"] == 2 * 2**20 // 4
    assert row["counted_bytes_per_call"] == 3 * 4 * row["n_elements"]
    assert row["gb_s"] > 0 and row["best_gb_s"] >= row["gb_s"]
    assert row["gb_s"] == pytest.approx(row["counted_bytes_per_call"] / row["median_s"] / 1e9, rel=0.02)


def test_the_donated_triad_maps_no_new_memory_per_call():
    # The output is written into the donated input's buffer: no 16 MiB (4096 pages) of fresh
    # memory to map and first-touch per call.
    donated = memory.triad_bandwidth("jax", mib=16, repeats=3, warmup=2)
    assert donated["minor_faults_per_call"] < 0.1 * 16 * 2**20 / 4096


def test_the_triad_refuses_unknown_implementations_and_cache_sized_arrays():
    with pytest.raises(ValueError, match="implementation"):
        memory.triad_bandwidth("fortran")
    with pytest.raises(ValueError, match="MiB"):
        memory.triad_bandwidth("numpy", mib=0.5)


def test_the_memory_benchmark_prints_one_json_line_per_implementation(capsys):
    memory.main(["--mib", "2", "--repeats", "2", "--warmup", "1"])
    rows = json_lines(capsys.readouterr().out)
    assert [r["implementation"] for r in rows] == list(memory.IMPLEMENTATIONS)
    assert all(TRIAD_KEYS <= set(r) for r in rows)


def test_the_roofline_fraction_is_transfer_time_over_step_time():
    # 2 GB at 10 GB/s is 0.2 s, in a 0.4 s step: half.
    assert train_step.roofline_fraction(2e9, 10.0, 0.4) == pytest.approx(0.5)
    assert train_step.roofline_fraction(None, 10.0, 0.4) is None
    assert train_step.roofline_fraction(2e9, None, 0.4) is None


def test_the_cost_analysis_of_a_compiled_function_gives_flops_and_bytes():
    x = jnp.ones((128, 128), jnp.float32)
    compiled = jax.jit(lambda a, b: a @ b).lower(x, x).compile()
    cost = train_step.cost_analysis(compiled)
    assert cost["flops"] == pytest.approx(2 * 128**3, rel=0.05)
    # Reads two 64 KiB operands and writes one result, at least.
    assert cost["bytes_accessed"] >= 3 * 128 * 128 * 4


def test_the_cost_analysis_also_reads_the_older_list_form():
    class Old:
        def cost_analysis(self):
            return [{"flops": 10.0, "bytes accessed": 40.0}]

    assert train_step.cost_analysis(Old()) == {"flops": 10.0, "bytes_accessed": 40.0, "temp_bytes": None}


def test_the_accelerator_script_runs_the_train_step_and_inference_quickly(capsys):
    accelerator.main(["--quick", "--only", "train_step", "inference"])
    rows = json_lines(capsys.readouterr().out)
    assert [r["benchmark"] for r in rows] == ["train_step", "inference"]
    for row in rows:
        assert SHARED_KEYS | ROOFLINE_KEYS <= set(row)
        assert row["platform"] == jax.devices()[0].platform
        assert row["first_s"] > 0 and row["median_s"] > 0
        assert row["xla_flops"] > 0 and row["xla_bytes_accessed"] > 0
        assert row["triad_gb_s"] is None      # --quick skips the triad
    assert rows[0]["compilations"] == 1
    assert {"user_s_per_step", "system_s_per_step", "minor_faults_per_step", "first_step_cpu_s"} <= set(rows[0])


@pytest.mark.slow
def test_the_accelerator_script_runs_all_three_as_a_command():
    done = subprocess.run([sys.executable, "-m", "benchmarks.accelerator", "--quick"], cwd=ROOT,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json_lines(done.stdout)
    assert [r["benchmark"] for r in rows] == ["train_step", "inference", "inherent_structure"]
    assert all(SHARED_KEYS <= set(r) for r in rows)
    assert rows[2]["max_force"] < 1e-4 and rows[2]["median_s"] is None     # --quick: no repeats
