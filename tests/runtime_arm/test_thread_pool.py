"""The runtime's thread pool (runtime_arm/src/thread_pool.c) under stress: pool_driver.c runs
hundreds of back-to-back jobs on pools of 2..5 threads (more threads than this machine has
cores, so workers are preempted mid-spin) and checks that every task ran exactly once and
never with another job's context; once natively and once under ThreadSanitizer."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edgekiln.backends.arm_cpu.toolchain import RUNTIME_DIR

HERE = Path(__file__).parent


def _build(tmp_path: Path, *flags: str) -> Path:
    exe = tmp_path / "pool_driver"
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", *flags,
                    f"-I{RUNTIME_DIR / 'src'}", f"-I{RUNTIME_DIR / 'include'}", str(HERE / "pool_driver.c"),
                    str(RUNTIME_DIR / "src" / "thread_pool.c"), "-o", str(exe)], check=True, capture_output=True, text=True)
    return exe


needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


@needs_gcc
def test_every_task_runs_once_per_job(tmp_path):
    proc = subprocess.run([str(_build(tmp_path)), "800"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


@needs_gcc
def test_no_data_race_under_thread_sanitizer(tmp_path):
    try:
        exe = _build(tmp_path, "-fsanitize=thread", "-g")
    except subprocess.CalledProcessError as error:
        pytest.skip(f"gcc cannot build with ThreadSanitizer here: {error.stderr[:200]}")
    proc = subprocess.run([str(exe), "150"], capture_output=True, text=True, timeout=120)
    if "FATAL: ThreadSanitizer" in proc.stderr:  # e.g. an ASLR layout TSan does not support
        pytest.skip("ThreadSanitizer cannot run in this environment")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr[-3000:]
