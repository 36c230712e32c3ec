"""The numbers of the model blob, read from the C runtime's `ek_ops.h` at import.

`ek_ops.h` is the single source of truth: every `#define EK_<GROUP>_<NAME> <integer>` line
becomes `GROUP["NAME"]` here, e.g. `OP["QCONV2D"] == 1`, `ATTR["STRIDES"] == 1`,
`FN["RELU"]`, `DT["INT8"]`, `BLOB["VERSION"]`.  Unprefixed groups (`EK_MAX_RANK`) land in
`MISC`.  Nothing is hand-copied, so the writer and the loader cannot drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path

HEADER = Path(__file__).resolve().parents[2] / "runtime_arm" / "include" / "ek_ops.h"
_DEFINE = re.compile(r"^#define\s+EK_([A-Z0-9]+)_([A-Z0-9_]+)\s+(-?\d+)\b", re.MULTILINE)
_GROUPS = ("BLOB", "SECTION", "DT", "STORE", "PACK", "ATYPE", "ATTR", "OP", "FN", "STEP", "REDUCE", "POOL",
           "SPARSE", "BLOCK", "STATUS")


def _parse(text: str) -> dict[str, dict[str, int]]:
    groups: dict[str, dict[str, int]] = {g: {} for g in (*_GROUPS, "MISC")}
    for first, rest, value in _DEFINE.findall(text):
        if first in groups:
            groups[first][rest] = int(value)
        else:
            groups["MISC"][f"{first}_{rest}"] = int(value)
    return groups


_TABLES = _parse(HEADER.read_text(encoding="utf-8"))
BLOB = _TABLES["BLOB"]
SECTION = _TABLES["SECTION"]
DT = _TABLES["DT"]
STORE = _TABLES["STORE"]
PACK = _TABLES["PACK"]
ATYPE = _TABLES["ATYPE"]
ATTR = _TABLES["ATTR"]
OP = _TABLES["OP"]
FN = _TABLES["FN"]
STEP = _TABLES["STEP"]
REDUCE = _TABLES["REDUCE"]
POOL = _TABLES["POOL"]
SPARSE = _TABLES["SPARSE"]
BLOCK = _TABLES["BLOCK"]
STATUS = _TABLES["STATUS"]
MAX_RANK = _TABLES["MISC"]["MAX_RANK"]

OP_NAMES = {code: name for name, code in OP.items()}

# numpy dtype name -> EK_DT_* code
DTYPE_CODES = {"float32": DT["FLOAT32"], "int8": DT["INT8"], "uint8": DT["UINT8"], "int32": DT["INT32"],
               "int64": DT["INT64"], "bool": DT["BOOL"], "int16": DT["INT16"], "uint16": DT["UINT16"]}
