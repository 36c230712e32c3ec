"""`QuantOptions`: everything a user says about quantization, from the CLI or the Python API.

    --quant int8|int4:g64|ternary|w4a16:g64   default precision of weighted layers
    --calib DATA                               .npy/.npz file, folder, 'synthetic[:N]' (ZeroQ), or an iterable (API)
    --calib-method minmax|percentile[:p]|entropy|mse
    --weights 'PATTERN:PRECISION'              per-layer precision by node/weight name glob or op:Type
    --keep-float PATTERN                       layers left in float
    --quant-config FILE.yaml                   the same rules in a file
    --equalize / --bias-correction             accuracy helpers (cross-layer equalization, bias correction)

Defaults (measured on the zoo and PP-OCR: `python -m benchmarks.quantization_sqnr`): activation
ranges by "mse" (the clipping level that minimizes the squared error of each histogram),
bias correction on, and graph outputs of weighted layers left float (`float_outputs`:
exact integer accumulator times one float scale, on targets that run fp32) instead of
being clipped and rounded to int8.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekiln.errors import OptionError


@dataclass(frozen=True)
class QuantOptions:
    quant: str = "int8"
    calib: Any = None
    calib_method: str = "mse"
    weights: tuple[str, ...] = ()
    keep_float: tuple[str, ...] = ()
    config_file: str | None = None
    weight_method: str = "minmax"
    keep_first_last_int8: bool | None = None
    equalize: bool = False
    bias_correction: bool = True
    preprocessing: str | None = None
    calib_samples: int | None = None
    float_outputs: bool = True

    def __post_init__(self) -> None:
        if self.calib is None:
            raise OptionError(
                f"--quant {self.quant} needs calibration data: pass --calib with a .npy/.npz file, a folder of "
                "samples or images, or 'synthetic' for data-free calibration"
            )

    def config(self):
        """The per-layer `QuantConfig` these options describe (a YAML file, or the flags)."""
        from edgekiln.quantization.quant_config import QuantConfig

        if self.config_file is not None:
            return QuantConfig.from_yaml(self.config_file)
        return QuantConfig.from_options(self.quant, self.weights, self.keep_float,
                                        keep_first_last_int8=self.keep_first_last_int8, method=self.weight_method)

    def to_manifest(self) -> dict[str, Any]:
        """What the manifest records: reproducible values only (a path's name, not an iterable's repr)."""
        record = asdict(self)
        calib = self.calib
        record["calib"] = calib if isinstance(calib, str) else (Path(calib).name if isinstance(calib, Path)
                                                                  else f"<{type(calib).__name__}>")
        record["weights"], record["keep_float"] = list(self.weights), list(self.keep_float)
        if self.config_file is not None:
            record["config_file"] = Path(self.config_file).name
        return record


def as_tuple(values: str | Iterable[str] | None) -> tuple[str, ...]:
    if values is None:
        return ()
    return (values,) if isinstance(values, str) else tuple(values)
