"""Guest instruction counts per kernel call under qemu: the plugin build and its trace.

The plugin (`runtime_arm/tools/qemu_insn_plugin.c`) is a host shared library, compiled on
first use with the host's `cc` and cached under `$EDGEKILN_CACHE/tools/<hash of source and
compiler>/libinsn.so` (renamed into place, like the runtime build).

Attribution.  `ek_run --mark-calls --profile F` brackets each timed run with the marker
system call (MARK_SYSCALL, argument 1 = begin, 2 = end) and the runtime reads the clock
before and after every kernel call; qemu-user 7.x maps no vDSO, so each clock read is a
`clock_gettime` system call the plugin records with the instruction count so far.  For the
last bracketed run the trace reads

    mark(1)  clock(t0)  [clock(s_0) clock(e_0)] ... [clock(s_n-1) clock(e_n-1)]  clock(t1)  mark(2)

and call i executed  (e_i - s_i) - overhead  instructions, where `overhead` (the clock read
and the loop step, which contain no kernel code) is the smallest gap e_i -> s_i+1 between two
calls.  The total is t1 - t0.  Counts are exact with one thread (threads share the counter).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgekiln.backends.arm_cpu.toolchain import RUNTIME_DIR, ToolchainError, cache_root
from edgekiln.compiler.atomic_dir import cache_entry

PLUGIN_SOURCE = RUNTIME_DIR / "tools" / "qemu_insn_plugin.c"
PLUGIN_FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-shared", "-fPIC")
MARK_SYSCALL = 0x4B45                        # runner_main.c EK_MARK_SYSCALL
# the guest's clock_gettime system call number; 32-bit arm: clock_gettime64 (403), which glibc >= 2.34
# (Debian 12) calls first on armhf for its 64-bit time_t
CLOCK_GETTIME = {"aarch64": 113, "arm": 403}
TRACE_FILE = "insn_trace.txt"


class InstructionCountError(ToolchainError):
    """The instruction counts cannot be taken (no plugin support, no host compiler, bad trace)."""


@dataclass(frozen=True)
class InstructionCounts:
    total: int               # the whole ek_model_run
    per_call: list[int]      # one entry per kernel call, the clock overhead removed
    overhead: int            # instructions subtracted from each call


def build_plugin(cc: str = "cc") -> Path:
    """The plugin library, built on first use and cached by content."""
    if shutil.which(cc) is None:
        raise InstructionCountError(f"no host C compiler ({cc}) to build the qemu instruction-count plugin: install "
                                    "gcc, or measure time instead (--measure time)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256(PLUGIN_SOURCE.read_bytes() + version.encode() + " ".join(PLUGIN_FLAGS).encode())
    final = cache_root().parent / "tools" / key.hexdigest()[:24]
    library = final / "libinsn.so"
    if library.is_file():
        return library
    with cache_entry(final) as staging:
        proc = subprocess.run([cc, *PLUGIN_FLAGS, str(PLUGIN_SOURCE), "-o", str(staging / "libinsn.so")],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise InstructionCountError(f"building the qemu plugin failed:\n{proc.stderr.strip()}")
    return library


def check_plugin_support(qemu: str) -> None:
    help_text = subprocess.run([qemu, "-h"], capture_output=True, text=True, check=False).stdout
    if "-plugin" not in help_text:
        raise InstructionCountError(f"{qemu} was built without TCG plugin support: instruction counts need a qemu "
                                    "with plugins (Debian's qemu-user has them); use --measure time")


def plugin_arguments(library: Path, arch: str) -> list[str]:
    """qemu options that load the plugin writing TRACE_FILE into the run's directory."""
    clock = CLOCK_GETTIME.get(arch)
    if clock is None:
        raise InstructionCountError(f"instruction counts per call are implemented for aarch64 guests, not {arch}")
    return ["-plugin", f"{library},out={TRACE_FILE},watch={clock},watch={MARK_SYSCALL}"]


def parse_trace(text: str, arch: str, n_calls: int) -> InstructionCounts:
    """The counts of the last marked run in a plugin trace (see the module docstring)."""
    clock = CLOCK_GETTIME[arch]
    runs, current = [], None
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] != ["syscall"]:
            continue
        number, argument, count = int(parts[1]), int(parts[2]), int(parts[3])
        if number == MARK_SYSCALL and argument == 1:
            current = []
        elif number == MARK_SYSCALL and argument == 2 and current is not None:
            runs.append(current)
            current = None
        elif number == clock and current is not None:
            current.append(count)
    if not runs:
        raise InstructionCountError("the instruction trace has no marked run: the runner was not started with "
                                    "--mark-calls, or the plugin did not load")
    clocks = runs[-1]
    if len(clocks) != 2 * n_calls + 2:
        raise InstructionCountError(
            f"the instruction trace has {len(clocks)} clock reads in the measured run, expected {2 * n_calls + 2} "
            "(two per kernel call and two around the run): this qemu may read the clock without a system call "
            "(a vDSO), so per-call counts are unavailable")
    starts, ends = clocks[1:-1:2], clocks[2:-1:2]
    gaps = [s - e for e, s in zip(ends, starts[1:])]
    overhead = min(gaps) if gaps else 0
    per_call = [max(e - s - overhead, 0) for s, e in zip(starts, ends)]
    return InstructionCounts(total=clocks[-1] - clocks[0], per_call=per_call, overhead=overhead)
