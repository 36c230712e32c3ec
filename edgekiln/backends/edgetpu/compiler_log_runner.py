"""Run edgetpu_compiler on a .tflite when it is on PATH, and collect its output model and its log.

    edgetpu_compiler -s -o OUT_DIR model.tflite   ->   OUT_DIR/model_edgetpu.tflite, OUT_DIR/model_edgetpu.log

(`-s` prints the operation table on stdout as well; `-o` names the output folder.)  The compiler
is x86-64 Linux only and not installable everywhere, so its absence is normal: the caller is
told once per process (`absent_message`) and the edgetpu artifact keeps the plain `.tflite`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgekiln.backends.edgetpu.compiler_log import CompilerLog, parse_compiler_log

COMPILER = "edgetpu_compiler"
TIMEOUT_S = 300

_absence_told = False


@dataclass
class CompilerRun:
    log: CompilerLog
    model: bytes | None     # model_edgetpu.tflite, None when the compile failed
    log_text: str           # stdout + stderr + the .log file, as the compiler wrote them
    returncode: int


def find_compiler() -> str | None:
    return shutil.which(COMPILER)


def absent_message() -> str | None:
    """The 'edgetpu_compiler is not on PATH' line, the first time only (None afterwards)."""
    global _absence_told
    if _absence_told:
        return None
    _absence_told = True
    return (f"{COMPILER} is not on PATH: the artifact holds model.tflite and the report from Coral's documented "
            f"rules; install {COMPILER} (x86-64 Linux, from Coral's apt repository) to also get model_edgetpu.tflite")


def run_compiler(tflite: bytes, executable: str | None = None, timeout_s: int = TIMEOUT_S) -> CompilerRun:
    """Compile `tflite` with edgetpu_compiler (found on PATH unless `executable` is given)."""
    executable = executable or find_compiler()
    if executable is None:
        raise FileNotFoundError(f"{COMPILER} is not on PATH")
    with tempfile.TemporaryDirectory(prefix="edgekiln-edgetpu-") as tmp:
        source, out = Path(tmp) / "model.tflite", Path(tmp) / "out"
        source.write_bytes(tflite)
        out.mkdir()
        try:
            done = subprocess.run([executable, "-s", "-o", str(out), str(source)], capture_output=True, text=True,
                                  timeout=timeout_s, check=False)
            stdout, stderr, code = done.stdout, done.stderr, done.returncode
        except subprocess.TimeoutExpired:
            stdout, stderr, code = "", f"ERROR: {COMPILER} did not finish within {timeout_s} s", -1
        log_file = out / "model_edgetpu.log"
        log_text = log_file.read_text(errors="replace") if log_file.exists() else ""
        model_file = out / "model_edgetpu.tflite"
        model = model_file.read_bytes() if model_file.exists() and code == 0 else None
    log = parse_compiler_log(stdout + "\n" + stderr, log_text)
    if code != 0 and log.error is None:
        log.error = f"{COMPILER} exited with status {code}"
        log.compiled = False
    return CompilerRun(log=log, model=model, log_text="\n".join(t for t in (stdout, stderr, log_text) if t),
                       returncode=code)
