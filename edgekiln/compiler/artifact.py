"""`Artifact`: what `compile` produces, a folder with `manifest.json` and the backend's files.

    out/
      manifest.json        model hash, target, options, I/O with shapes and quantization,
                           per-layer precision, memory plan, sha256 of every other file
      model.onnx           the optimized graph (open it in Netron)
      program/             the lowered Program (program.json + constants.bin)
      ...                  backend files

Everything is deterministic: no timestamps, sorted JSON keys, deterministic protobuf,
so compiling the same model with the same options twice gives byte-identical folders.
Saving goes through `atomic_directory`: a crash never leaves a half-written artifact.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekiln.compiler.atomic_dir import atomic_directory
from edgekiln.compiler.runners import make_runner
from edgekiln.errors import ArtifactError

FORMAT = "edgekiln-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dumps_json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def read_folder(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, keyed by its POSIX path relative to it."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class Artifact:
    manifest: dict[str, Any]
    files: dict[str, bytes] = field(repr=False)
    path: Path | None = None

    # -- running -------------------------------------------------------------------------
    @property
    def input_specs(self) -> list[dict[str, Any]]:
        return self.manifest["inputs"]

    @property
    def output_specs(self) -> list[dict[str, Any]]:
        return self.manifest["outputs"]

    def run(self, inputs: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """Run the artifact with the runner its manifest names; returns outputs by name."""
        feeds = self._check_inputs(inputs)
        runner = make_runner(self.manifest["runner"], self.files, self.manifest)
        return runner.run(feeds)

    def _check_inputs(self, inputs: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        specs = {s["name"]: s for s in self.input_specs}
        if isinstance(inputs, np.ndarray):
            if len(specs) != 1:
                raise ArtifactError(f"the model has {len(specs)} inputs ({', '.join(specs)}); pass them by name")
            inputs = {next(iter(specs)): inputs}
        missing = sorted(set(specs) - set(inputs))
        extra = sorted(set(inputs) - set(specs))
        if missing or extra:
            takes = ", ".join(f"{n} {s['dtype']}{s['shape']}" for n, s in specs.items())
            raise ArtifactError(
                f"inputs do not match the model: missing {missing or 'none'}, unexpected {extra or 'none'}; "
                f"the model takes {takes}"
            )
        feeds = {}
        for name, spec in specs.items():
            array = np.asarray(inputs[name])
            if tuple(array.shape) != tuple(spec["shape"]):
                raise ArtifactError(
                    f"input {name!r} has shape {list(array.shape)}, the artifact was compiled for {spec['shape']}; "
                    "recompile with --input-shape to change it"
                )
            if array.dtype != np.dtype(spec["dtype"]):
                if not np.can_cast(array.dtype, spec["dtype"], casting="same_kind"):
                    raise ArtifactError(f"input {name!r} has dtype {array.dtype}, expected {spec['dtype']}")
                array = array.astype(spec["dtype"])
            feeds[name] = np.ascontiguousarray(array)
        return feeds

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path, force: bool = False) -> Path:
        path = Path(path)
        with atomic_directory(path, replace=force) as staging:
            for name, data in sorted(self.files.items()):
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            (staging / MANIFEST).write_bytes(dumps_json(self.manifest))
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise ArtifactError(f"{path}: not an edgekiln artifact (no {MANIFEST}); compile one with 'edgekiln compile'")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{manifest_path}: unreadable manifest ({exc}); recompile the artifact") from None
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"{manifest_path}: artifact format {manifest.get('format')!r} v{manifest.get('format_version')} "
                f"is not {FORMAT!r} v{FORMAT_VERSION}; recompile it with this edgekiln"
            )
        files = {}
        for name, digest in manifest["files"].items():
            file = path / name
            if not file.is_file():
                raise ArtifactError(f"{path}: file {name} listed in the manifest is missing; recompile the artifact")
            data = file.read_bytes()
            if sha256(data) != digest:
                raise ArtifactError(f"{path}: {name} does not match its checksum in the manifest (corrupted or edited)")
            files[name] = data
        return cls(manifest, files, path)


def build_manifest(*, model_name: str, model_sha256: str, target: Any, options: dict[str, Any],
                   program: Any, runner: str, files: dict[str, bytes], version: str) -> dict[str, Any]:
    """The manifest of an artifact; `files` are hashed so `load` can detect corruption."""

    def io_spec(name: str) -> dict[str, Any]:
        spec = program.tensors[name]
        quant = None
        if spec.quant is not None:
            quant = {"scale": list(spec.quant.scale), "zero_point": list(spec.quant.zero_point),
                     "axis": spec.quant.axis, "bits": spec.quant.bits}
        return {"name": name, "dtype": spec.dtype, "shape": list(spec.shape), "layout": spec.layout, "quant": quant}

    def precision(call: Any) -> str:
        weights = [program.tensors[t] for t in call.inputs if t in program.constants]
        quantized = [w for w in weights if w.quant is not None]
        if quantized:
            return {8: "int8", 4: "int4", 2: "ternary"}.get(quantized[0].quant.bits, f"int{quantized[0].quant.bits}")
        return "fp32" if weights else "-"

    def layer(call: Any) -> dict[str, Any]:
        entry = {"name": call.name, "op": call.op, "precision": precision(call)}
        if call.attrs.get("float_output"):  # int8 weights and GEMM, float32 output (a model output kept float)
            entry["output"] = "fp32"
        return entry

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "edgekiln_version": version,
        "model": {"name": model_name, "sha256": model_sha256},
        "target": {"name": target.name, "kind": target.kind, "backend": target.backend},
        "options": options,
        "inputs": [io_spec(n) for n in program.inputs],
        "outputs": [io_spec(n) for n in program.outputs],
        "layers": [layer(c) for c in program.calls],
        "memory": {
            "arena_bytes": program.arena.arena_bytes,
            "naive_intermediate_bytes": program.arena.naive_bytes,
            "constant_bytes": program.constant_bytes,
        },
        "runner": runner,
        "files": {name: sha256(data) for name, data in sorted(files.items())},
    }


def program_files(program: Any) -> dict[str, bytes]:
    """The Program's own files under `program/`, plus `program.txt`, its readable dump."""
    with tempfile.TemporaryDirectory() as tmp:
        program.save(Path(tmp))
        files = {f"program/{name}": data for name, data in read_folder(Path(tmp)).items()}
    files["program/program.txt"] = program.to_text().encode()
    return files
