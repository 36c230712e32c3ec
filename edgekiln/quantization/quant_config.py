"""`QuantConfig`: the precision of every node, from a default, per-node rules and a YAML file.

A rule is `pattern:precision`.  The pattern selects nodes by

    op:Conv          op type; a fused node also answers to its base op
                     (`edgekiln.FusedConvRelu` is `op:FusedConvRelu` and `op:Conv`)
    blocks.*         a glob (fnmatch) on the node name, on the node name without its leading
                     "/" (torch names nodes "/blocks/blocks.0/.../Conv"), or on the node's
                     weight initializer name ("blocks.0.body.0.0.weight": the torch module path)

Resolution for a node, first answer wins:

    1. the LAST matching rule (--keep-float rules come after --weights rules, so they win);
    2. `keep_first_last_int8` (default on when the default precision is below 8 bits):
       the first and the last weighted node in graph order get "int8" (the stem sees raw
       pixels and the classifier decides the answer: both are the most sensitive layers);
    3. the default precision.

A rule that matches no node is an error by default (a typo would silently quantize the layer
the user meant to protect); `strict=False` turns it into a warning.

YAML form (every key optional; `weights` is a list of "pattern:precision" or a mapping):

    quant: int8
    method: minmax            # or mse: weight clipping scale that minimizes weight MSE
    keep_first_last_int8: true
    weights:
      blocks.*: int4:g64
      op:MatMul: w4a16:g128
    keep_float: [head.*]
"""

from __future__ import annotations

import fnmatch
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

from edgekiln.compiler import fused_ops
from edgekiln.compiler.graph import Graph
from edgekiln.errors import OptionError

PRECISION_SYNTAX = "fp32 | int8 | int4 | int4:g<32|64|128> | ternary | ternary:g<32|64|128> | w4a16:g<32|64|128>"
RULE_SYNTAX = "PATTERN:PRECISION, e.g. 'blocks.*:int4:g64' or 'op:Conv:int8' (PATTERN: node name glob or op:OpType)"
GROUP_SIZES = (32, 64, 128)
METHODS = ("minmax", "mse")
_PRECISION = re.compile(r"^(fp32|int8|int4|ternary|w4a16)(?::g(\d+))?$")
_LOW_BIT = ("int4", "ternary")  # weight-only w4a16 keeps float activations: no guard by default
_YAML_KEYS = {"quant", "method", "keep_first_last_int8", "weights", "keep_float", "strict"}
_DEFAULT = ("", "ai.onnx")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def parse_precision(text: str, option: str = "--quant") -> str:
    """Check a precision string and return it canonical; the error names `option`."""
    cleaned = str(text).strip().lower()
    found = _PRECISION.match(cleaned)
    problem = None
    if found is None:
        problem = "unknown precision"
    else:
        kind, group = found.group(1), found.group(2)
        if group is not None and kind in ("fp32", "int8"):
            problem = f"{kind} takes no group size"
        elif group is not None and int(group) not in GROUP_SIZES:
            problem = f"group size {group} is not one of {', '.join(map(str, GROUP_SIZES))}"
        elif kind == "w4a16" and group is None:
            cleaned = "w4a16:g64"  # weight-only int4 is group-wise by definition; 64 is the common choice
    if problem is not None:
        raise OptionError(f"{option} {text!r}: {problem}; expected {PRECISION_SYNTAX}")
    return cleaned


def precision_kind(precision: str) -> str:
    """'int4:g64' -> 'int4'."""
    return precision.split(":")[0]


def group_size_of(precision: str) -> int | None:
    """'int4:g64' -> 64; None for per-channel precisions."""
    _, _, group = precision.partition(":g")
    return int(group) if group else None


def quantizes_activations(precision: str) -> bool:
    """int8 activations for every precision except fp32 and weight-only w4a16."""
    return precision_kind(precision) not in ("fp32", "w4a16")


def base_op(node: ir.Node) -> str | None:
    """Conv / ConvTranspose / Gemm / MatMul for those ops and their fused forms, else None."""
    if node.domain in _DEFAULT and node.op_type in WEIGHTED_OPS:
        return node.op_type
    if node.domain == fused_ops.DOMAIN:
        parsed = fused_ops.parse_fused_op_type(node.op_type)
        if parsed is not None:
            return parsed[0].removeprefix("Fused")
    return None


def is_weighted(node: ir.Node) -> bool:
    """A layer with a constant weight: Conv / ConvTranspose / Gemm / MatMul (plain or fused)."""
    return base_op(node) is not None and len(node.inputs) > 1 and Graph.constant(node.inputs[1]) is not None


@dataclass(frozen=True)
class PrecisionRule:
    """`pattern:precision`; `option` says where it came from (for messages)."""

    pattern: str
    precision: str
    option: str = "--weights"

    @classmethod
    def parse(cls, text: str, option: str = "--weights", precision: str | None = None) -> PrecisionRule:
        """'blocks.*:int4:g64' (or, with `precision` given, a bare pattern as --keep-float takes)."""
        text = str(text).strip()
        if precision is not None:
            pattern = text
        else:
            prefix = "op:" if text.startswith("op:") else ""
            pattern, sep, precision = text[len(prefix):].partition(":")
            pattern = prefix + pattern
            if not sep or not precision:
                raise OptionError(f"{option} {text!r}: no precision after the pattern; expected {RULE_SYNTAX}")
        if not pattern or pattern == "op:":
            raise OptionError(f"{option} {text!r}: empty pattern; expected {RULE_SYNTAX}")
        return cls(pattern, parse_precision(precision, f"{option} {text!r}:"), option)

    def matches(self, node: ir.Node) -> bool:
        if self.pattern.startswith("op:"):
            op = self.pattern[3:]
            return node.op_type == op or base_op(node) == op
        names = [node.name or "", (node.name or "").lstrip("/"), _weight_name(node)]
        return any(name and fnmatch.fnmatchcase(name, self.pattern) for name in names)

    def __str__(self) -> str:
        return f"{self.option} {self.pattern}:{self.precision}"


@dataclass
class QuantConfig:
    """The default precision, per-node rules (last match wins) and the first/last-layer guard."""

    default: str = "int8"
    rules: tuple[PrecisionRule, ...] = ()
    keep_first_last_int8: bool | None = None  # None: on when `default` is below 8 bits
    method: str = "minmax"                    # weight scale: "minmax" or "mse"
    strict: bool = True                       # a rule matching no node is an error (else a warning)
    _first_last: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        self.default = parse_precision(self.default, "--quant")
        if self.method not in METHODS:
            raise OptionError(f"weight quantization method {self.method!r}: expected one of {', '.join(METHODS)}")
        self.rules = tuple(self.rules)

    @classmethod
    def from_options(cls, quant: str = "int8", weights: Iterable[str] = (), keep_float: Iterable[str] = (),
                     keep_first_last_int8: bool | None = None, method: str = "minmax",
                     strict: bool = True) -> QuantConfig:
        """The command-line form: `--quant`, repeated `--weights PATTERN:PRECISION`, `--keep-float PATTERN`."""
        rules = [PrecisionRule.parse(text, "--weights") for text in _as_list(weights, "--weights")]
        rules += [PrecisionRule.parse(text, "--keep-float", precision="fp32")
                  for text in _as_list(keep_float, "--keep-float")]
        return cls(quant, tuple(rules), keep_first_last_int8, method, strict)

    @classmethod
    def from_yaml(cls, source: str | os.PathLike) -> QuantConfig:
        """A YAML file (a path) or YAML text with the keys of the module docstring."""
        import yaml

        path = Path(source) if not isinstance(source, str) or "\n" not in source else None
        where = str(path) if path is not None else "quantization config"
        try:
            text = path.read_text() if path is not None else source
            data = yaml.safe_load(text) or {}
        except OSError as exc:
            raise OptionError(f"cannot read quantization config {where}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise OptionError(f"{where} is not valid YAML: {exc}") from exc
        if not isinstance(data, Mapping):
            raise OptionError(f"{where}: expected a mapping with keys {', '.join(sorted(_YAML_KEYS))}")
        unknown = set(data) - _YAML_KEYS
        if unknown:
            raise OptionError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                              f"expected {', '.join(sorted(_YAML_KEYS))}")
        weights = data.get("weights") or []
        if isinstance(weights, Mapping):
            weights = [f"{pattern}:{precision}" for pattern, precision in weights.items()]
        first_last = data.get("keep_first_last_int8")
        if first_last is not None and not isinstance(first_last, bool):
            raise OptionError(f"{where}: keep_first_last_int8 must be true or false, got {first_last!r}")
        return cls.from_options(str(data.get("quant", "int8")), weights, data.get("keep_float") or [],
                                first_last, str(data.get("method", "minmax")), bool(data.get("strict", True)))

    @property
    def guards_first_last(self) -> bool:
        if self.keep_first_last_int8 is not None:
            return self.keep_first_last_int8
        return precision_kind(self.default) in _LOW_BIT

    # -- resolution ------------------------------------------------------------------------
    def assign(self, graph: Graph) -> dict[str, str]:
        """{node name: precision} for every node, after checking that each rule matches a node.

        Also remembers the graph's first and last weighted nodes for `precision_of`.
        """
        nodes = list(graph.main)
        weighted = [n for n in nodes if is_weighted(n)]
        self._first_last = frozenset(n.name for n in (weighted[:1] + weighted[-1:]) if n.name)
        for rule in self.rules:
            if not any(rule.matches(n) for n in nodes):
                sample = ", ".join(repr(n.name) for n in (weighted or nodes)[:4])
                weights = ", ".join(repr(n.inputs[1].name) for n in weighted[:3])
                message = (f"{rule} matches no node; node names look like {sample}"
                           + (f" and weight names like {weights}" if weights else "")
                           + " (use a glob on either, or op:OpType)")
                if self.strict:
                    raise OptionError(message)
                warnings.warn(message, stacklevel=2)
        return {n.name: self.precision_of(n) for n in nodes}

    def precision_of(self, node: ir.Node) -> str:
        """The node's precision (see the module docstring); call `assign(graph)` first for the
        first/last-layer guard to know the graph."""
        for rule in reversed(self.rules):
            if rule.matches(node):
                return rule.precision
        if self.guards_first_last and node.name in self._first_last and is_weighted(node):
            return "int8"
        return self.default


def _weight_name(node: ir.Node) -> str:
    """The name of the node's weight initializer, also once it is read through a QDQ chain
    (`qdq_format` names the int8 initializer "<weight>_quantized"), so rules still match on a
    second quantization run."""
    value = node.inputs[1] if len(node.inputs) > 1 else None
    for _ in range(4):  # [Reshape] -> DequantizeLinear -> [Reshape] -> [Transpose] at most
        producer = value.producer() if value is not None else None
        if producer is None or producer.op_type not in ("Transpose", "Reshape", "DequantizeLinear"):
            break
        value = producer.inputs[0]
    if value is None or Graph.constant(value) is None:
        return ""
    name = value.name or ""
    return name.removesuffix("_quantized") if value.dtype == ir.DataType.INT8 else name


def _as_list(values: Iterable[str] | str, option: str) -> list[str]:
    if isinstance(values, str):
        return [values]
    if not isinstance(values, Iterable):
        raise OptionError(f"{option}: expected a list of rules, got {values!r}; syntax: {RULE_SYNTAX}")
    return [str(v) for v in values]
