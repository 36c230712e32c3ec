"""How the runner executable reaches a CPU: `local` (the host runs it) or `qemu` (qemu-user
emulates the target CPU model, `qemu-aarch64 -cpu cortex-a76 ./ek_run ...`).

A transport turns the runner's argument list into a command line in a work directory it is
given; files are already there (both transports share this machine's file system).  ssh and
adb transports (copy in, run, copy out) are not written yet.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgekiln.backends.arm_cpu.toolchain import machine_arch
from edgekiln.errors import ArtifactError

QEMU_PACKAGE = "qemu-user"


@dataclass(frozen=True)
class Transport:
    name: str                 # "local" or "qemu"
    prefix: tuple[str, ...]   # what goes before the executable

    def command(self, executable: Path, args: list[str]) -> list[str]:
        return [*self.prefix, str(executable), *args]

    def run(self, executable: Path, args: list[str], cwd: Path, timeout: float | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(executable, args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              check=False)


def choose_transport(arch: str, qemu_cpu: str | None, force: str | None = None) -> Transport:
    """Local when this machine runs `arch` natively (unless `force`d to qemu), else qemu-`arch`."""
    native = machine_arch(os.uname().machine) == arch
    if force not in (None, "local", "qemu"):
        raise ArtifactError(f"unknown transport {force!r} (local, qemu)")
    if force == "local" or (force is None and native):
        if not native:
            raise ArtifactError(f"this machine is {os.uname().machine}; the artifact's runner is built for {arch}: "
                                "run it under qemu or on the device")
        return Transport("local", ())
    qemu = shutil.which(f"qemu-{arch}")
    if qemu is None:
        raise ArtifactError(f"qemu-{arch} not found: running an {arch} artifact on this machine needs qemu-user "
                            f"(Debian: apt-get install {QEMU_PACKAGE}), or run it on the device")
    return Transport("qemu", (qemu, *(("-cpu", qemu_cpu) if qemu_cpu else ())))
