"""`--emit c-library`: an arm_cpu artifact as a static library to link into an application.

    out/
      libedgekiln_model.a   the runtime (every runtime_arm/src file but the runner's main) and
                            ek_model_data.o (the blob as a C array + ek_model.h's functions),
                            built with the target's compiler and flags, archived with `ar rcsD`
      include/              ek_model.h (generated: I/O sizes and names, ek_model_open[_file]),
                            ek_runtime.h and ek_ops.h (the runtime API it extends)
      model.blob            the same blob as a file, for ek_model_open_file
      src/ek_model_data.c   the generated source in the library, kept for reference
      example/main.c        reads raw input files, runs once, writes raw output files
      Makefile              builds example/ek_example with the same compiler

Generated text comes from `templates/c_library/*.j2`.  The runtime objects are compiled by
the same commands as the runner (`toolchain.compile_commands`), so the library and `ek_run`
agree bit for bit; they are cached next to the runner builds (`<arch>-lib-<key>/`, the same
kind of key: sources, compiler, flags), so only the model's data file compiles per emit.  The
folder is written atomically; the archive is deterministic (`ar D`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from edgekiln.backends.arm_cpu.backend import BLOB_FILE, CONFIG_FILE
from edgekiln.backends.arm_cpu.toolchain import (
    RUNTIME_DIR,
    Toolchain,
    ToolchainError,
    _source_digest,
    cache_root,
    compile_commands,
    compile_flags,
    find_toolchain,
    runtime_sources,
)
from edgekiln.compiler.atomic_dir import atomic_directory, cache_entry
from edgekiln.errors import OptionError

TEMPLATES = Path(__file__).resolve().parent / "templates" / "c_library"
LIBRARY = "libedgekiln_model.a"
PUBLIC_HEADERS = ("ek_runtime.h", "ek_ops.h")
BYTES_PER_ROW = 24


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def _c_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of printable ASCII is a valid C string literal


def _tensor_context(spec: Mapping[str, Any], index: int, kind: str) -> dict[str, Any]:
    nbytes = int(np.prod(spec["shape"], dtype=np.int64)) * np.dtype(spec["dtype"]).itemsize
    stem = re.sub(r"[^A-Za-z0-9_]+", "_", spec["name"]).strip("_") or f"{kind}{index}"
    return {"name": spec["name"], "c_name": _c_string(spec["name"]), "dtype": spec["dtype"], "shape": spec["shape"],
            "nbytes": nbytes, "file_stem": stem}


def _blob_rows(blob: bytes) -> str:
    rows = []
    for start in range(0, len(blob), BYTES_PER_ROW):
        rows.append("    " + ",".join(str(b) for b in blob[start:start + BYTES_PER_ROW]) + ",")
    return "\n".join(rows) if rows else "    0"


def _archiver(tc: Toolchain) -> str:
    """The ar of the compiler's binutils: `aarch64-linux-gnu-gcc` -> `aarch64-linux-gnu-ar`."""
    if tc.cc.endswith("gcc") and shutil.which(tc.cc[:-3] + "ar"):
        return tc.cc[:-3] + "ar"
    for candidate in (tc.machine + "-ar", "llvm-ar", "ar"):
        if shutil.which(candidate):
            return candidate
    raise ToolchainError(f"no archiver (ar) for {tc.machine}: install binutils for it")


def write_c_library(artifact: Any, output: Path, *, toolchain: str | None = None, force: bool = False) -> Path:
    """Write the C library of an arm_cpu `artifact` into `output` (see the module docstring)."""
    files = artifact.files
    if CONFIG_FILE not in files or BLOB_FILE not in files:
        raise OptionError(f"--emit c-library needs an arm_cpu target (this artifact runs with "
                          f"{artifact.manifest.get('runner')!r}): compile for an ARM target or 'host'")
    config = json.loads(files[CONFIG_FILE])
    tc = find_toolchain(config["arch"], toolchain)
    blob = files[BLOB_FILE]
    manifest = artifact.manifest
    context = {
        "model_name": manifest["model"]["name"], "version": manifest.get("edgekiln_version", "?"),
        "target": manifest["target"]["name"], "arch": tc.arch, "cc": " ".join([tc.cc, *tc.flags]),  # clang: --target=
        "ldflags": "-pie" if tc.android else ("-static" if tc.arch != "x86_64" else ""),  # Android runs PIE only
        "inputs": [_tensor_context(s, k, "input") for k, s in enumerate(manifest["inputs"])],
        "outputs": [_tensor_context(s, k, "output") for k, s in enumerate(manifest["outputs"])],
        "blob_size": len(blob), "blob_sha256": hashlib.sha256(blob).hexdigest(), "blob_rows": _blob_rows(blob),
    }
    env = _environment()
    with atomic_directory(Path(output), replace=force) as staging:
        (staging / "include").mkdir()
        (staging / "src").mkdir()
        (staging / "example").mkdir()
        for header in PUBLIC_HEADERS:
            shutil.copyfile(RUNTIME_DIR / "include" / header, staging / "include" / header)
        (staging / "include" / "ek_model.h").write_text(env.get_template("ek_model.h.j2").render(context))
        (staging / "src" / "ek_model_data.c").write_text(env.get_template("ek_model_data.c.j2").render(context))
        (staging / "example" / "main.c").write_text(env.get_template("main.c.j2").render(context))
        (staging / "Makefile").write_text(env.get_template("Makefile.j2").render(context))
        (staging / BLOB_FILE).write_bytes(blob)
        _build_library(tc, staging)
    return Path(output)


def runtime_objects(tc: Toolchain) -> list[Path]:
    """The runtime's object files for `tc` (every source but the runner's main), cached."""
    sources = [s for s in runtime_sources() if s != "src/runner_main.c"]
    key_data = {"sources": _source_digest(sources), "cc": tc.cc, "machine": tc.machine, "version": tc.version,
                "commands": compile_commands(tc, sources, Path("."), "unused")[:-1]}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:24]
    final = cache_root() / f"{tc.arch}-lib-{key}"
    if not (final / "done").is_file():
        with cache_entry(final) as staging:
            commands = compile_commands(tc, sources, staging, "unused")[:-1]  # no link
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
                errors = [e for e in pool.map(_compile, commands) if e]
            if errors:
                raise ToolchainError(f"building the C library with {tc.cc} failed:\n" + "\n".join(errors[:3]))
            (staging / "done").write_text("ok\n")
    return sorted(final.glob("*.o"))


def _build_library(tc: Toolchain, folder: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="edgekiln-clib-") as tmp:
        data_object = Path(tmp) / "ek_model_data.o"
        error = _compile([tc.cc, *compile_flags(tc), f"-I{folder / 'include'}", f"-ffile-prefix-map={folder}=.", "-c",
                          str(folder / "src" / "ek_model_data.c"), "-o", str(data_object)])
        if error:
            raise ToolchainError(f"compiling the model's data file with {tc.cc} failed:\n{error}")
        objects = [str(p) for p in runtime_objects(tc)] + [str(data_object)]
        proc = subprocess.run([_archiver(tc), "rcsD", str(folder / LIBRARY), *objects], capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            raise ToolchainError(f"archiving {LIBRARY} failed: {proc.stderr.strip()}")


def _compile(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, cwd=RUNTIME_DIR, capture_output=True, text=True, check=False)
    return "" if proc.returncode == 0 else f"$ {' '.join(cmd)}\n{proc.stderr.strip()}"
