"""The ONNX frontend: from a file on disk to a checked, static, canonical `Graph`.

Steps, in order, each failing with a message that names the file, node or input:

1. read the protobuf (a truncated file or a file that is not ONNX is refused);
2. resolve external data, confined to the model's folder (a location that escapes it,
   absolute or through '..' or a symlink, is refused: a model file must not make us read
   arbitrary files);
3. run the ONNX checker;
4. convert the default-domain opset into the range the passes are written for;
5. lift Constant nodes to initializers (PP-OCR keeps every weight in a Constant node);
6. fix dynamic input dimensions from `--input-shape`, and refuse to go on while any
   dimension is still symbolic;
7. infer shapes and fold the shape arithmetic that dynamic exports leave behind
   (Shape -> Gather -> Concat -> Reshape), so every value has a static shape;
8. remove dead nodes and give every node and value a stable, unique name.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import onnx.version_converter
import onnx_ir as ir
import onnx_ir.passes.common as ir_passes
import onnxscript.optimizer
from google.protobuf.message import DecodeError

from edgekiln.compiler.explain import ExplainTrace
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.input_shapes import InputShapes
from edgekiln.compiler.pass_contract import node_label
from edgekiln.errors import DynamicShapeError, ModelLoadError, OptionError

# The default-domain opsets the passes are written against.  17 is the first with
# LayerNormalization; below it models are upgraded, above the range they are refused
# only if the converter cannot bring them down.
OPSET_MIN = 17
OPSET_MAX = 21
CANONICAL_OPSET = 17


def load_model(path: str | os.PathLike, input_shapes: InputShapes | None = None,
               trace: ExplainTrace | None = None, allow_dynamic: bool = False) -> Graph:
    """Load, check and canonicalize the model at `path` (see the module docstring).

    `allow_dynamic` keeps going with symbolic dims (for `inspect`, which reports them);
    compilation never sets it.
    """
    path = Path(path)
    trace = trace if trace is not None else ExplainTrace()
    proto = read_model_proto(path)
    check_model_proto(proto, path)
    proto = convert_opset(proto, path, trace)
    graph = Graph.from_proto(proto, source=path)
    return canonicalize(graph, input_shapes or {}, trace, label=path.name, allow_dynamic=allow_dynamic)


def canonicalize(graph: Graph, input_shapes: InputShapes, trace: ExplainTrace, label: str,
                 allow_dynamic: bool = False) -> Graph:
    """Steps 5-8 on an already checked graph (also used for models handed over in memory)."""
    ops_in_file = graph.count_ops()
    # Name before folding: the folder names the nodes it touches 'node', 'node_1', ...
    name_nodes_and_values(graph)
    if lift_constants(graph):
        trace.note(f"{label}: lifted Constant nodes to initializers")
    fix_input_shapes(graph, input_shapes, label, allow_dynamic)
    infer_static_shapes(graph, label, allow_dynamic)
    lift_constants(graph)  # folding leaves its results as Constant nodes
    ir_passes.RemoveUnusedNodesPass()(graph.model)
    name_nodes_and_values(graph)
    ir_passes.TopologicalSortPass()(graph.model)
    ops_now = graph.count_ops()
    gone = {op: n - ops_now.get(op, 0) for op, n in ops_in_file.items() if n > ops_now.get(op, 0)}
    if gone:
        listed = ", ".join(f"{n} {op}" for op, n in gone.items())
        trace.note(f"{label}: the frontend folded or removed {listed} (constants, shape arithmetic, no-ops)")
    return graph


def name_nodes_and_values(graph: Graph) -> None:
    """Unique names everywhere; unnamed nodes are named after their op type (`Conv_3`)."""
    ir_passes.NameFixPass(name_generator=_OpTypeNames())(graph.model)


def lift_constants(graph: Graph) -> bool:
    lift = ir_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)
    return lift(graph.model).modified


def read_model_proto(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a folder, expected an .onnx file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(
            f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc}). "
            "The file may be truncated or not ONNX at all; re-export it from the training framework"
        ) from None
    if proto.ir_version <= 0 or len(proto.graph.node) == 0:
        raise ModelLoadError(
            f"{path}: parsed as protobuf but holds no ONNX graph (ir_version={proto.ir_version}, "
            f"{len(proto.graph.node)} nodes). The file may be truncated or not an ONNX model"
        )
    load_confined_external_data(proto, path)
    return proto


def _external_tensors(proto: onnx.ModelProto):
    for tensor in proto.graph.initializer:
        yield tensor
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t


def load_confined_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Load external tensor data, refusing any location outside the model's folder."""
    base = path.resolve().parent
    external = [t for t in _external_tensors(proto) if t.data_location == onnx.TensorProto.EXTERNAL]
    for tensor in external:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(base):
            raise ModelLoadError(
                f"{path}: tensor {tensor.name!r} points at external data {location!r}, outside the "
                f"model's folder {base}. Move the data file next to the model and re-save it"
            )
        if not target.is_file():
            raise ModelLoadError(
                f"{path}: tensor {tensor.name!r} needs external data file {location!r}, which is missing "
                f"from {base}. Copy the .data file next to the model"
            )
    if external:
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, str(base))
        except Exception as exc:  # onnx raises bare Exceptions and ValueErrors here
            raise ModelLoadError(f"{path}: cannot read its external data: {exc}") from None


def fill_missing_output_shapes(proto: onnx.ModelProto) -> None:
    """Give graph outputs declared without a shape the inferred one.

    ONNX allows a shapeless output and onnxruntime runs such models, but the checker of
    onnx >= 1.17 refuses them; hand-edited models (an output added by name) often have one.
    """
    missing = [o for o in proto.graph.output if o.type.HasField("tensor_type") and not o.type.tensor_type.HasField("shape")]
    if not missing:
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - the checker below reports what is wrong with the model
        return
    known = {v.name: v.type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    for output in missing:
        if output.name in known and known[output.name].tensor_type.HasField("shape"):
            output.type.CopyFrom(known[output.name])


def check_model_proto(proto: onnx.ModelProto, path: Path) -> None:
    fill_missing_output_shapes(proto)
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelLoadError(f"{path}: the ONNX checker rejects this model: {first}") from None


def convert_opset(proto: onnx.ModelProto, path: Path, trace: ExplainTrace) -> onnx.ModelProto:
    version = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if OPSET_MIN <= version <= OPSET_MAX:
        return proto
    wanted = CANONICAL_OPSET if version < OPSET_MIN else OPSET_MAX
    try:
        converted = onnx.version_converter.convert_version(proto, wanted)
    except Exception as exc:  # the converter raises RuntimeError and plain Exceptions
        raise ModelLoadError(
            f"{path}: opset {version} could not be converted to opset {wanted} ({exc}). "
            f"Re-export the model with an opset between {OPSET_MIN} and {OPSET_MAX}"
        ) from None
    trace.note(f"{path.name}: converted opset {version} -> {wanted}")
    return converted


def fix_input_shapes(graph: Graph, input_shapes: InputShapes, label: str, allow_dynamic: bool = False) -> None:
    """Pin input dims from `--input-shape`; refuse to continue while any stays dynamic."""
    by_name = {v.name: v for v in graph.inputs}
    unknown = sorted(set(input_shapes) - set(by_name))
    if unknown:
        raise OptionError(
            f"--input-shape names {', '.join(map(repr, unknown))}, but {label} has inputs "
            f"{', '.join(map(repr, by_name))}"
        )
    for name, shape in input_shapes.items():
        value = by_name[name]
        current = tuple(value.shape) if value.shape is not None else None
        if current is not None and len(current) != len(shape):
            raise OptionError(
                f"--input-shape {name}={'x'.join(map(str, shape))}: input {name!r} of {label} has rank "
                f"{len(current)} ({_format_dims(current)}), not {len(shape)}"
            )
        for axis, (have, want) in enumerate(zip(current or (), shape)):
            if isinstance(have, int) and have > 0 and have != want:
                raise OptionError(
                    f"--input-shape {name}={'x'.join(map(str, shape))}: dim {axis} of input {name!r} is fixed "
                    f"at {have} in {label}"
                )
        value.shape = ir.Shape(shape)
    if allow_dynamic:
        return
    for value in graph.inputs:
        dims = tuple(value.shape) if value.shape is not None else None
        if dims is None or not all(isinstance(d, int) and d > 0 for d in dims):
            example = "x".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in (dims or ("N",)))
            raise DynamicShapeError(
                f"input {value.name!r} of {label} has a dynamic shape ({_format_dims(dims)}). "
                f"Give it a static one with --input-shape {value.name}={example} (N = the size to compile for)"
            )


def _format_dims(dims) -> str:
    if dims is None:
        return "unknown rank"
    return "[" + ", ".join(str(d) if isinstance(d, int) and d > 0 else (str(d) if d is not None and str(d) not in ("-1", "") else "?") for d in dims) + "]"


def infer_static_shapes(graph: Graph, label: str, allow_dynamic: bool = False) -> None:
    """Infer every value's shape, folding shape arithmetic; name the first node left dynamic."""
    # Stale exporter annotations ('-1', 'p2o.DynamicDimension.0') on intermediate values
    # would survive inference, which only refines; forget them and infer afresh.
    for node in graph.main:
        for value in node.outputs:
            if Graph.static_shape(value) is None:
                value.shape = None
    try:
        # Folding runs shape inference node by node and turns Shape/Gather/... chains on
        # now-static shapes into constants; a second round catches chains it exposed.
        # Only folding: the optimizer's rewrite rules (BN fusion, ...) are the passes' job,
        # and ZeroQ-style calibration needs the BatchNorm statistics still in place.
        for _ in range(2):
            if not onnxscript.optimizer.fold_constants_ir(graph.model, onnx_shape_inference=True).modified:
                break
    except Exception as exc:  # noqa: BLE001 - the optimizer's errors are not typed
        raise ModelLoadError(f"{label}: shape inference failed: {type(exc).__name__}: {exc}") from None
    _run_onnx_shape_inference(graph)
    if allow_dynamic:
        return
    for node in graph.main:
        for value in node.outputs:
            if Graph.static_shape(value) is None:
                raise DynamicShapeError(
                    f"{label}: output {value.name!r} of node {node_label(node)} has a shape that stays dynamic "
                    f"({_format_dims(tuple(value.shape) if value.shape is not None else None)}) even with static "
                    "inputs; it depends on data. edgekiln compiles static graphs only: export the model "
                    "without data-dependent shapes"
                )


def _run_onnx_shape_inference(graph: Graph) -> None:
    """Full-model ONNX shape inference, written back into the IR values."""
    ir_passes.ShapeInferencePass(strict_mode=False)(graph.model)


class _OpTypeNames(ir_passes.naming.SimpleNameGenerator):
    """Unnamed nodes are named after their op type (`Conv`, `Conv_1`, ...), not 'node_N'."""

    def generate_node_name(self, node: ir.Node) -> str:
        return node.name or node.op_type
