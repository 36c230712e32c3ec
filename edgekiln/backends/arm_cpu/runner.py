"""`ArmCpuRunner`: runs an arm_cpu artifact's `bin/ek_run` on its blob through a transport.

`run(feeds)` writes the blob, the runner and each input (raw little-endian bytes, as
`ek_run` reads them) into a fresh temporary directory, runs `ek_run` through the transport
(locally, under `qemu-aarch64 -cpu <target's qemu_cpu>`, or copied to an ssh / adb device),
reads the outputs back as numpy arrays shaped and typed as the manifest says, and always
removes the directory.  `bench(...)` does the same with `--repeat` / `--warmup` / `--profile`
and returns the runner's latency and profile JSON; `count_instructions(...)` runs once under
qemu with the instruction-count plugin and returns guest instructions per kernel call.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekiln.backends.arm_cpu.backend import BLOB_FILE, CONFIG_FILE, RUNNER_FILE
from edgekiln.backends.arm_cpu.insn_plugin import (
    TRACE_FILE,
    InstructionCountError,
    InstructionCounts,
    build_plugin,
    check_plugin_support,
    parse_trace,
    plugin_arguments,
)
from edgekiln.backends.arm_cpu.transport import Transport, choose_transport
from edgekiln.errors import ArtifactError

# ek_run's exit statuses (runner_main.c)
EXIT_MESSAGES = {2: "bad usage or unreadable file", 3: "the model blob does not load", 4: "the run failed",
                 5: "the requested ISA is not available"}


class ArmCpuRunner:
    def __init__(self, files: dict[str, bytes], manifest: dict[str, Any], transport: str | None = None,
                 timeout: float | None = None, qemu_cpu: str | None = None) -> None:
        """`transport` is a device string ("local", "qemu[:CPU]", "ssh://user@host[:port]",
        "adb[:serial]"; default: local when this machine runs the runner natively, else qemu);
        `qemu_cpu` emulates another CPU model than the target's (e.g. cortex-a53 to run the NEON
        path of a cortex-a76 artifact)."""
        missing = [f for f in (BLOB_FILE, RUNNER_FILE, CONFIG_FILE) if f not in files]
        if missing:
            raise ArtifactError(f"the artifact lacks {', '.join(missing)}: it was not built by the arm_cpu backend; "
                                "recompile it")
        self.files = files
        self.manifest = manifest
        self.config = json.loads(files[CONFIG_FILE])
        self.transport = choose_transport(self.config["arch"], qemu_cpu or self.config.get("qemu_cpu"), transport)
        self.timeout = timeout

    def run(self, feeds: dict[str, np.ndarray], *, threads: int = 1, isa: str = "auto") -> dict[str, np.ndarray]:
        outputs, _ = self._execute(feeds, ["--threads", str(threads), "--isa", isa])
        return outputs

    def bench(self, feeds: dict[str, np.ndarray], *, repeat: int = 10, warmup: int = 1, threads: int = 1,
              isa: str = "auto", profile: bool = True) -> dict[str, Any]:
        """Latency statistics (ms) of `repeat` runs after `warmup`; per-call times when `profile`."""
        args = ["--threads", str(threads), "--isa", isa, "--repeat", str(repeat), "--warmup", str(warmup)]
        _, stats = self._execute(feeds, args, profile=profile)
        stats["transport"] = self.transport.name
        return stats

    def count_instructions(self, feeds: dict[str, np.ndarray], *, isa: str = "auto", warmup: int = 1
                           ) -> tuple[InstructionCounts, dict[str, Any]]:
        """Guest instructions of one run, per kernel call, under qemu (one thread: exact)."""
        transport = self.transport
        if not isinstance(transport, Transport) or transport.name != "qemu":
            raise InstructionCountError(f"instruction counts need the qemu device, not {transport.name}; use "
                                        "--measure time on real hardware")
        check_plugin_support(transport.prefix[0])
        plugin = plugin_arguments(build_plugin(), self.config["arch"])
        counting = Transport("qemu", (transport.prefix[0], *plugin, *transport.prefix[1:]))
        args = ["--threads", "1", "--isa", isa, "--repeat", "1", "--warmup", str(warmup), "--mark-calls"]
        try:
            _, stats = self._execute(feeds, args, profile=True, transport=counting, keep=[TRACE_FILE])
        except ArtifactError as exc:
            if "usage: ek_run" in str(exc) and "--mark-calls" not in str(exc):
                raise InstructionCountError("this artifact's runner predates instruction counting (no --mark-calls): "
                                            "recompile the artifact") from None
            raise
        counts = parse_trace(stats.pop("files", {}).get(TRACE_FILE, ""), self.config["arch"], len(stats["profile"]))
        stats["transport"] = transport.name
        return counts, stats

    def _execute(self, feeds: dict[str, np.ndarray], extra: list[str], profile: bool = False,
                 transport: Any = None, keep: list[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        transport = transport or self.transport
        with tempfile.TemporaryDirectory(prefix="edgekiln-run-") as tmp:
            work = Path(tmp)
            (work / "model.blob").write_bytes(self.files[BLOB_FILE])
            runner = work / "ek_run"
            runner.write_bytes(self.files[RUNNER_FILE])
            os.chmod(runner, 0o755)
            args = ["model.blob"]
            for k, spec in enumerate(self.manifest["inputs"]):
                array = np.ascontiguousarray(feeds[spec["name"]], dtype=np.dtype(spec["dtype"]).newbyteorder("<"))
                (work / f"in{k}.bin").write_bytes(array.tobytes())
                args += ["--input", f"{spec['name']}=in{k}.bin"]
            for k, spec in enumerate(self.manifest["outputs"]):
                args += ["--output", f"{spec['name']}=out{k}.bin"]
            if profile:
                args += ["--profile", "profile.json"]
            fetch = [f"out{k}.bin" for k in range(len(self.manifest["outputs"]))] + (["profile.json"] if profile else [])
            try:
                proc = transport.run(runner, args + extra, work, self.timeout, fetch=fetch)
            except subprocess.TimeoutExpired:
                raise ArtifactError(f"ek_run did not finish within {self.timeout} s ({transport.name})") from None
            if proc.returncode != 0:
                raise ArtifactError(_failure(proc, transport))
            outputs = {}
            for k, spec in enumerate(self.manifest["outputs"]):
                data = (work / f"out{k}.bin").read_bytes()
                dtype = np.dtype(spec["dtype"]).newbyteorder("<")
                outputs[spec["name"]] = np.frombuffer(data, dtype).astype(spec["dtype"]).reshape(spec["shape"])
            stats = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
            if profile:
                stats["profile"] = json.loads((work / "profile.json").read_text())["calls"]
            if keep:
                stats["files"] = {name: (work / name).read_text() for name in keep if (work / name).is_file()}
            return outputs, stats


def _failure(proc: subprocess.CompletedProcess, transport: Any) -> str:
    detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no message"
    if proc.returncode < 0:
        return (f"ek_run was killed by signal {-proc.returncode} ({transport.name}): {detail}; this is a bug in the "
                "edgekiln runtime, please report it with the artifact")
    why = EXIT_MESSAGES.get(proc.returncode, f"exit status {proc.returncode}")
    return f"ek_run failed ({why}, {transport.name}): {detail}"
