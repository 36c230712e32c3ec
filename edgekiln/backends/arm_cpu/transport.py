"""How the runner executable reaches a CPU: a `--device` string becomes a transport.

    local                    this machine runs it (an x86_64 artifact on an x86_64 host)
    qemu[:CPU]               qemu-user emulates the target CPU model: qemu-aarch64 -cpu cortex-a76 ./ek_run ...
    ssh://USER@HOST[:PORT]   copy into a fresh remote temp dir, run, copy results back, all over ssh
    adb[:SERIAL]             the same over Android's adb (push / shell / pull) under /data/local/tmp

Every transport gets a local work directory holding the runner, the blob and the inputs, the
runner's argument list (paths relative to that directory) and the names of the files the run
writes (`fetch`).  Local and qemu run in the directory itself; ssh and adb copy it to the device,
run there, copy `fetch` back into it and always remove the remote directory.

The remote commands go through the device's shell with every argument quoted (`shlex.quote`).
Files travel over ssh as a tar stream (`tar -xf -` on the device; busybox has it), so neither
scp nor an SFTP server is needed on the board.  `EDGEKILN_SSH_OPTIONS` adds options to every
ssh call (e.g. `-F ~/.ssh/edge_config` or `-i key -o StrictHostKeyChecking=accept-new`); ssh
always runs with BatchMode, so a missing key fails instead of waiting for a password.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from edgekiln.backends.arm_cpu.toolchain import machine_arch
from edgekiln.errors import ArtifactError

QEMU_PACKAGE = "qemu-user"
SSH_OPTIONS_ENV = "EDGEKILN_SSH_OPTIONS"
ADB_TEMP_ROOT = "/data/local/tmp"
DEVICE_HELP = "local, qemu[:CPU], ssh://USER@HOST[:PORT] or adb[:SERIAL]"


class TransportError(ArtifactError):
    """The device cannot be reached, or a file cannot be copied to or from it."""


@dataclass(frozen=True)
class Transport:
    """Runs the executable on this machine, natively or under an emulator `prefix`."""

    name: str                 # "local" or "qemu"
    prefix: tuple[str, ...]   # what goes before the executable

    def command(self, executable: Path, args: list[str]) -> list[str]:
        return [*self.prefix, str(executable), *args]

    def run(self, executable: Path, args: list[str], cwd: Path, timeout: float | None = None,
            fetch: list[str] | None = None) -> subprocess.CompletedProcess:
        # The files are already where the run writes them: `fetch` needs no copy.
        return subprocess.run(self.command(executable, args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              check=False)


class RemoteTransport:
    """Copy in, run, copy out, clean up: what ssh and adb share.  Subclasses say how to run a
    shell command on the device and how to copy files each way."""

    name = "remote"

    def __init__(self, arch: str) -> None:
        self.arch = arch

    def shell(self, script: str, timeout: float | None) -> subprocess.CompletedProcess:
        raise NotImplementedError

    def push(self, files: list[Path], remote_dir: str, timeout: float | None) -> subprocess.CompletedProcess:
        raise NotImplementedError

    def pull(self, remote_files: list[str], local_dir: Path, timeout: float | None) -> subprocess.CompletedProcess:
        raise NotImplementedError

    def temp_root(self) -> str:
        return "/tmp"

    def run(self, executable: Path, args: list[str], cwd: Path, timeout: float | None = None,
            fetch: list[str] | None = None) -> subprocess.CompletedProcess:
        remote_dir = self._open(timeout)
        try:
            copied = self.push(sorted(p for p in cwd.iterdir() if p.is_file()), remote_dir, timeout)
            if copied.returncode != 0:
                raise TransportError(f"copying the run's files to {self.name} failed: {_last_line(copied)}")
            command = " ".join(shlex.quote(a) for a in ["./" + executable.name, *args])
            script = f"cd {shlex.quote(remote_dir)} && chmod 755 {shlex.quote(executable.name)} && {command}"
            proc = self.shell(script, timeout)
            if proc.returncode == 0 and fetch:
                pulled = self.pull([f"{remote_dir}/{name}" for name in fetch], cwd, timeout)
                if pulled.returncode != 0:
                    raise TransportError(f"copying the results back from {self.name} failed: {_last_line(pulled)}")
            return proc
        finally:
            self.shell(f"rm -rf {shlex.quote(remote_dir)}", timeout)

    def _open(self, timeout: float | None) -> str:
        """Check the device's architecture and make the remote work directory."""
        template = f"{self.temp_root()}/edgekiln-remote-XXXXXX"
        proc = self.shell(f"uname -m && mktemp -d {shlex.quote(template)}", timeout)
        lines = proc.stdout.split()
        if proc.returncode != 0 or len(lines) < 2:
            raise TransportError(f"cannot reach {self.name}: {_last_line(proc)}")
        if machine_arch(lines[0]) != self.arch:
            raise TransportError(f"{self.name} is an {lines[0]} machine; the artifact's runner is built for "
                                 f"{self.arch}: compile for a matching target")
        return lines[1]


class SshTransport(RemoteTransport):
    def __init__(self, arch: str, user: str | None, host: str, port: int | None) -> None:
        super().__init__(arch)
        self.destination = f"{user}@{host}" if user else host
        self.port = port
        self.name = f"ssh://{self.destination}" + (f":{port}" if port else "")
        self.options = ["-o", "BatchMode=yes", *shlex.split(os.environ.get(SSH_OPTIONS_ENV, ""))]
        if shutil.which("ssh") is None:
            raise TransportError(f"ssh not found: the {self.name} device needs the OpenSSH client "
                                 "(Debian: apt-get install openssh-client)")

    def shell(self, script: str, timeout: float | None, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        port = ["-p", str(self.port)] if self.port else []
        return _call(["ssh", *port, *self.options, self.destination, script], timeout, self.name, stdin)

    def push(self, files: list[Path], remote_dir: str, timeout: float | None) -> subprocess.CompletedProcess:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for file in files:
                tar.add(file, arcname=file.name)
        return self.shell(f"tar -C {shlex.quote(remote_dir)} -xf -", timeout, buffer.getvalue())

    def pull(self, remote_files: list[str], local_dir: Path, timeout: float | None) -> subprocess.CompletedProcess:
        folder = remote_files[0].rsplit("/", 1)[0]
        names = " ".join(shlex.quote(f.rsplit("/", 1)[1]) for f in remote_files)
        proc = self.shell(f"tar -C {shlex.quote(folder)} -cf - {names}", timeout, stdin=b"")
        if proc.returncode == 0:
            with tarfile.open(fileobj=io.BytesIO(proc.stdout), mode="r") as tar:
                tar.extractall(local_dir, filter="data")
        return proc


class AdbTransport(RemoteTransport):
    def __init__(self, arch: str, serial: str | None) -> None:
        super().__init__(arch)
        self.serial = serial
        self.name = f"adb:{serial}" if serial else "adb"
        if shutil.which("adb") is None:
            raise TransportError("adb not found: running on an Android device needs Android's platform tools "
                                 "(Debian: apt-get install adb)")

    def _adb(self) -> list[str]:
        return ["adb", *(("-s", self.serial) if self.serial else ())]

    def temp_root(self) -> str:
        return ADB_TEMP_ROOT

    def shell(self, script: str, timeout: float | None) -> subprocess.CompletedProcess:
        return _call([*self._adb(), "shell", script], timeout, self.name)

    def push(self, files: list[Path], remote_dir: str, timeout: float | None) -> subprocess.CompletedProcess:
        return _call([*self._adb(), "push", *map(str, files), remote_dir + "/"], timeout, self.name)

    def pull(self, remote_files: list[str], local_dir: Path, timeout: float | None) -> subprocess.CompletedProcess:
        return _call([*self._adb(), "pull", *remote_files, str(local_dir) + "/"], timeout, self.name)


def _call(cmd: list[str], timeout: float | None, device: str, stdin: bytes | None = None
          ) -> subprocess.CompletedProcess:
    """Run a local tool; with `stdin` (bytes) the output stays bytes too (a tar stream)."""
    try:
        if stdin is not None:
            proc = subprocess.run(cmd, capture_output=True, input=stdin, timeout=timeout, check=False)
            proc.stderr = proc.stderr.decode(errors="replace")
            return proc
        return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise TransportError(f"{device} did not answer within {timeout} s ({cmd[0]} {cmd[1] if len(cmd) > 1 else ''})"
                             ) from None


def _last_line(proc: subprocess.CompletedProcess) -> str:
    text = (proc.stderr or "").strip() or (proc.stdout or "").strip()
    return text.splitlines()[-1] if text else f"exit status {proc.returncode}"


def parse_device(device: str) -> tuple[str, dict[str, object]]:
    """'ssh://me@pi:2222' -> ('ssh', {'user': 'me', 'host': 'pi', 'port': 2222}); 'qemu:max' ->
    ('qemu', {'cpu': 'max'}); 'adb:emulator-5554' -> ('adb', {'serial': ...}); 'local' -> ('local', {})."""
    if device == "local":
        return "local", {}
    if device == "qemu" or device.startswith("qemu:"):
        cpu = device.partition(":")[2]
        return "qemu", {"cpu": cpu or None}
    if device == "adb" or device.startswith("adb:"):
        return "adb", {"serial": device.partition(":")[2] or None}
    match = re.fullmatch(r"ssh://(?:([^@/:]+)@)?([^@/:]+)(?::(\d+))?/?", device)
    if match:
        return "ssh", {"user": match[1], "host": match[2], "port": int(match[3]) if match[3] else None}
    raise ArtifactError(f"unknown device {device!r}: use {DEVICE_HELP}")


def choose_transport(arch: str, qemu_cpu: str | None, force: str | None = None):
    """The transport for `force` (a --device string; None: local when this machine runs `arch`
    natively, else qemu-`arch` emulating `qemu_cpu`)."""
    kind, where = parse_device(force) if force else (None, {})
    if kind == "ssh":
        return SshTransport(arch, where["user"], where["host"], where["port"])
    if kind == "adb":
        return AdbTransport(arch, where["serial"])
    native = machine_arch(os.uname().machine) == arch
    if kind == "local" or (kind is None and native):
        if not native:
            raise ArtifactError(f"this machine is {os.uname().machine}; the artifact's runner is built for {arch}: "
                                "run it under qemu or on the device (--device qemu, ssh://..., adb)")
        return Transport("local", ())
    qemu = shutil.which(f"qemu-{arch}")
    if qemu is None:
        raise ArtifactError(f"qemu-{arch} not found: running an {arch} artifact on this machine needs qemu-user "
                            f"(Debian: apt-get install {QEMU_PACKAGE}), or run it on the device")
    cpu = where.get("cpu") or qemu_cpu
    return Transport("qemu", (qemu, *(("-cpu", cpu) if cpu else ())))
