"""The `edgekiln` command line.

A user's mistake (`EdgekilnError`) prints one line starting with `error:` and exits with
code 2; `--debug` shows the traceback too.  Anything else is an edgekiln bug and keeps its
traceback.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

import click
import numpy as np
from rich.console import Console

from edgekiln.errors import EdgekilnError, OptionError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class EdgekilnGroup(click.Group):
    """Turns `EdgekilnError` into one clear line and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgekilnError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
            ctx.exit(exc.exit_code)


@click.group(cls=EdgekilnGroup)
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.version_option(package_name="edgekiln")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """edgekiln: compile ONNX models for edge devices."""
    ctx.obj = {"debug": debug}


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the descriptions as JSON.")
def targets(as_json: bool) -> None:
    """List the target devices edgekiln knows."""
    from edgekiln.compiler.target import available_targets, render_targets_table

    found = available_targets()
    if as_json:
        import dataclasses
        import json

        click.echo(json.dumps([dataclasses.asdict(t) for t in found], indent=2, sort_keys=True, default=list))
        return
    console.print(render_targets_table(found))
    console.print("Pass --target NAME, or --target path/to/device.toml for a device of your own.")


input_shape_option = click.option(
    "--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS",
    help="Static shape for an input with dynamic dims, e.g. x=1x3x224x224 (repeatable).",
)


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@input_shape_option
@click.option("--target", "-t", "target_names", multiple=True,
              help="Check op support for these targets only (default: all).")
@click.option("--all", "all_layers", is_flag=True, help="List every layer, not only the heaviest.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the report as JSON here.")
def inspect(model: Path, input_shapes: tuple[str, ...], target_names: tuple[str, ...], all_layers: bool,
            json_path: Path | None) -> None:
    """Ops, parameters, MACs per layer, dynamic dims and per-target op support of MODEL.

    A .tflite MODEL, or --target edgetpu, gives the Edge TPU partition report (per op TPU or CPU and why)."""
    from edgekiln.backends.edgetpu.report_cli import (
        edgetpu_report_requested,
        show_edgetpu_report,
    )

    if edgetpu_report_requested(model, target_names):
        show_edgetpu_report(console, model, input_shapes, target_names, all_layers, json_path)
        return
    from edgekiln.compiler.frontend import load_model
    from edgekiln.compiler.input_shapes import parse_input_shapes
    from edgekiln.compiler.inspect_report import inspect_model
    from edgekiln.compiler.target import available_targets, get_target

    chosen = [get_target(n) for n in target_names] if target_names else available_targets()
    graph = load_model(model, parse_input_shapes(input_shapes), allow_dynamic=True)
    report = inspect_model(graph, chosen)
    report.render(console, max_layers=None if all_layers else 15)
    if json_path is not None:
        json_path.write_text(report.to_json())


def quant_options(command):
    """The quantization options `compile` and `quant-report` share (same names, same meaning)."""
    options = [
        click.option("--quant", metavar="PRECISION",
                     help="Quantize: int8 (W8A8), int4:g32|g64|g128 (W4A8), ternary[:gN], w4a16:gN "
                          "(weight-only int4)."),
        click.option("--calib", metavar="DATA",
                     help="Calibration data: .npy/.npz file, folder of .npy files or images, or 'synthetic[:N]' "
                          "(data-free)."),
        click.option("--calib-method", default="mse", show_default=True, metavar="METHOD",
                     help="Activation ranges: minmax, percentile[:99.99], entropy (KL), mse."),
        click.option("--calib-samples", type=int,
                     help="Use at most this many calibration samples (synthetic: how many)."),
        click.option("--preprocess", metavar="SPEC", help="For image folders, e.g. resize=256,crop=224,"
                                                          "mean=.485/.456/.406,std=.229/.224/.225,order=RGB."),
        click.option("--weights", "weight_rules", multiple=True, metavar="PATTERN:PRECISION",
                     help="Per-layer precision by node/weight name glob or op:Type, e.g. 'blocks.*:int4:g64' "
                          "(repeatable)."),
        click.option("--keep-float", multiple=True, metavar="PATTERN",
                     help="Leave these layers in float (repeatable)."),
        click.option("--quant-config", type=click.Path(path_type=Path), help="YAML file with the same rules."),
        click.option("--weight-method", type=click.Choice(["minmax", "mse"]), default="minmax", show_default=True,
                     help="Weight clipping: max|w|, or the clip that minimizes weight MSE."),
        click.option("--equalize", is_flag=True, help="Cross-layer equalization before quantizing (depthwise models)."),
        click.option("--bias-correction/--no-bias-correction", default=None,
                     help="Correct the bias shift quantized weights cause (on by default)."),
        click.option("--int8-outputs", is_flag=True,
                     help="Quantize the model's outputs to int8 too (by default a Conv/Gemm/MatMul writing a graph "
                          "output keeps it float: exact accumulator times one scale)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _quant_options_from(quant: str | None, calib: str | None, calib_method: str, calib_samples: int | None,
                        preprocess: str | None, weight_rules: tuple[str, ...], keep_float: tuple[str, ...],
                        quant_config: Path | None, weight_method: str, equalize: bool, bias_correction: bool | None,
                        int8_outputs: bool = False):
    from edgekiln.compiler.quant_options import QuantOptions

    # --bias-correction / --no-bias-correction given: that; neither: QuantOptions' default.
    chosen = {} if bias_correction is None else {"bias_correction": bias_correction}
    return QuantOptions(quant=quant or "int8", calib=calib, calib_method=calib_method, weights=weight_rules,
                        keep_float=keep_float, config_file=str(quant_config) if quant_config else None,
                        weight_method=weight_method, equalize=equalize, preprocessing=preprocess,
                        calib_samples=calib_samples, float_outputs=not int8_outputs, **chosen)


def prune_options(command):
    """The pruning options of `compile` (parsed by `PruneOptions.parse`, like the Python API's keywords)."""
    options = [
        click.option("--prune", "prune_rules", multiple=True, metavar="channels:RATIO[:METHOD]|PATTERN=RATIO",
                     help="Structured channel pruning, e.g. channels:0.3 (importance l1, l2, bn or data); "
                          "PATTERN=RATIO overrides the ratio for matching node names (glob or op:Type)."),
        click.option("--sparsity", "sparsity_rules", multiple=True, metavar="N:M|RATIO|PATTERN=SPEC",
                     help="Weight sparsity: 2:4, 1:4 or a magnitude ratio like 0.7; PATTERN=SPEC per layer."),
        click.option("--sparsity-scope", type=click.Choice(["layer", "global"]), default="layer", show_default=True,
                     help="Magnitude sparsity threshold per layer, or one threshold over all layers."),
        click.option("--prune-exclude", multiple=True, metavar="PATTERN",
                     help="Nodes (glob or op:Type) that pruning and sparsity leave alone."),
        click.option("--refit/--no-refit", default=True, show_default=True,
                     help="Least-squares re-fit of the layer after each pruned channel group."),
        click.option("--prune-calib", metavar="DATA", help="Calibration data for pruning (default: --calib's)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command("compile")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", "-t", "target_name", default="host", show_default=True,
              help="Target name (see 'edgekiln targets') or a device description .toml file.")
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True,
              help="Artifact folder to write (with --emit onnx: the .onnx file).")
@input_shape_option
@click.option("--emit", type=click.Choice(["artifact", "onnx", "c-library"]), default="artifact", show_default=True,
              help="artifact: the deployable folder; onnx: only the optimized ONNX model; c-library: a static "
                   "library + header + example for embedding (arm_cpu targets).")
@click.option("--explain", is_flag=True, help="Print what each pass did and why it did not fire elsewhere.")
@click.option("--force", is_flag=True, help="Replace the output if it exists.")
@click.option("--toolchain", metavar="CC", help="C compiler for the target's runtime (default: $CC, else the "
                                                 "Debian cross compiler, e.g. aarch64-linux-gnu-gcc; "
                                                 "arm-linux-gnueabihf-gcc for armv7 targets such as cortex-a7). "
                                                 "Also: clang, or an Android NDK clang such as "
                                                 "aarch64-linux-android21-clang (path, or found under "
                                                 "$ANDROID_NDK_HOME).")
@click.option("--float-io", is_flag=True, help="edgetpu: float model input/output (QUANTIZE/DEQUANTIZE at the "
                                               "edges of the .tflite) instead of int8.")
@click.option("--cpu-tail", is_flag=True, help="edgetpu: split the ops the Edge TPU cannot run off the end of the "
                                               "model into cpu_tail.onnx (run it on the host after the .tflite).")
@click.option("--weight-layout", type=click.Choice(["fast", "compact"]), default="fast", show_default=True,
              help="arm_cpu: how the model blob stores int4 / ternary weights. fast: the layout that runs "
                   "fastest on the target (on ARM, GEMM weights as the low-bit kernels read them, rows padded to "
                   "16-byte blocks); compact: the fewest bytes (flat int4, ternary five values per byte), unpacked "
                   "per block at run time (on a Cortex-A53 about 5-10% more instructions; on x86 fast is compact).")
@quant_options
@prune_options
def compile_command(model: Path, target_name: str, output: Path, input_shapes: tuple[str, ...], emit: str,
                    explain: bool, force: bool, toolchain: str | None, float_io: bool, cpu_tail: bool,
                    weight_layout: str, quant: str | None,
                    calib: str | None,
                    calib_method: str,
                    calib_samples: int | None, preprocess: str | None, weight_rules: tuple[str, ...],
                    keep_float: tuple[str, ...], quant_config: Path | None, weight_method: str, equalize: bool,
                    bias_correction: bool, int8_outputs: bool = False, prune_rules: tuple[str, ...] = (),
                    sparsity_rules: tuple[str, ...] = (), sparsity_scope: str = "layer",
                    prune_exclude: tuple[str, ...] = (), refit: bool = True, prune_calib: str | None = None) -> None:
    """Compile MODEL (.onnx) for a target device."""
    from edgekiln.compiler.compile import compile_model
    from edgekiln.compiler.onnx_file import save_onnx_atomically

    if output.exists() and not force:
        raise OptionError(f"output {output} already exists; choose another path or pass --force to replace it")
    quantization = None
    if quant is not None or quant_config is not None:
        quantization = _quant_options_from(quant, calib, calib_method, calib_samples, preprocess, weight_rules,
                                           keep_float, quant_config, weight_method, equalize, bias_correction,
                                           int8_outputs)
    elif calib or weight_rules or keep_float or equalize or bias_correction:
        raise OptionError("--calib, --weights, --keep-float, --equalize and --bias-correction apply to a quantized "
                          "compile; add --quant int8 (or another precision)")
    from edgekiln.compiler.prune_options import PruneOptions

    pruning = PruneOptions.parse(prune_rules, sparsity_rules, prune_exclude, refit=refit, calib=prune_calib,
                                 sparsity_scope=sparsity_scope)
    # No spinner while quantizing: calibration draws its own progress bar.
    status = err_console.status(f"compiling {model.name} for {target_name}") if quantization is None else nullcontext()
    with status:
        result = compile_model(model, target_name, input_shapes=input_shapes, quantization=quantization,
                               toolchain=toolchain, pruning=pruning, float_io=float_io, cpu_tail=cpu_tail,
                               weight_layout=weight_layout)
    if explain:
        console.print(result.trace.render(), soft_wrap=True, markup=False)
    if emit == "onnx":
        save_onnx_atomically(result.graph, output, force=force)
    elif emit == "c-library":
        from edgekiln.backends.arm_cpu.c_library import write_c_library

        with err_console.status("building the C library"):
            write_c_library(result.artifact, output, toolchain=toolchain, force=force)
    else:
        result.artifact.save(output, force=force)
    _print_compile_summary(result, output, emit)


def _print_compile_summary(result, output: Path, emit: str) -> None:
    manifest = result.artifact.manifest
    memory = manifest["memory"]
    naive = memory["naive_intermediate_bytes"]
    ratio = f" ({memory['arena_bytes'] / naive:.2f}x)" if naive else ""
    console.print(f"target      {manifest['target']['name']} ({manifest['target']['backend']} backend)")
    console.print(f"nodes       {sum(result.graph.count_ops().values())} after passes")
    console.print(f"arena       {memory['arena_bytes']:,} bytes vs {naive:,} naive{ratio}")
    console.print(f"constants   {memory['constant_bytes']:,} bytes")
    precisions: dict[str, int] = {}
    for layer in manifest["layers"]:
        if layer["precision"] != "-":
            precisions[layer["precision"]] = precisions.get(layer["precision"], 0) + 1
    if precisions:
        console.print("precision   " + ", ".join(f"{n} {p}" for p, n in sorted(precisions.items())) + " layer(s)")
    console.print(f"runs with   {manifest['runner']}")
    kind = {"onnx": "optimized ONNX", "c-library": "C library: make -C " + str(output)}.get(emit, "artifact")
    console.print(f"wrote       {output} ({kind})")


@main.command("quant-report")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="Report folder to write (report.html, report.json); default MODEL-quant-report.")
@click.option("--target", "-t", "target_name", default="host", show_default=True,
              help="Target name or device description .toml (decides the pass pipeline and precisions).")
@input_shape_option
@quant_options
@click.option("--auto-keep-float", type=int, metavar="K", help="Keep the K most sensitive layers in float.")
@click.option("--target-sqnr", type=float, metavar="DB",
              help="Keep the most sensitive layers in float until the output SQNR reaches DB.")
@click.option("--eval-samples", type=int, default=8, show_default=True,
              help="Samples to measure SQNR on (held out of calibration when there are twice as many).")
@click.option("--max-sensitivity-layers", type=int, default=128, show_default=True,
              help="Measure one-layer-at-a-time sensitivity for at most this many layers (one onnxruntime "
                   "session each; the lowest layer-wise SQNR first).")
@click.option("--force", is_flag=True, help="Replace the report folder if it exists.")
def quant_report(model: Path, output: Path | None, target_name: str, input_shapes: tuple[str, ...],
                 quant: str | None, calib: str | None, calib_method: str, calib_samples: int | None,
                 preprocess: str | None, weight_rules: tuple[str, ...], keep_float: tuple[str, ...],
                 quant_config: Path | None, weight_method: str, equalize: bool, bias_correction: bool | None,
                 int8_outputs: bool, auto_keep_float: int | None, target_sqnr: float | None, eval_samples: int,
                 max_sensitivity_layers: int, force: bool) -> None:
    """Find the layers that lose accuracy when MODEL is quantized, and what to do about it."""
    from edgekiln.quantization.debugger import analyze
    from edgekiln.quantization.report_writer import write_report

    output = output or Path(f"{model.stem}-quant-report")
    if output.exists() and not force:
        raise OptionError(f"output {output} already exists; choose another path or pass --force to replace it")
    quantization = _quant_options_from(quant, calib, calib_method, calib_samples, preprocess, weight_rules,
                                       keep_float, quant_config, weight_method, equalize, bias_correction,
                                       int8_outputs)
    report = analyze(model, quantization, target=target_name, input_shapes=input_shapes or None,
                     eval_samples=eval_samples, max_sensitivity_layers=max_sensitivity_layers,
                     auto_keep_float=auto_keep_float, target_sqnr=target_sqnr, model_label=str(model))
    write_report(report, output, force=force)
    _print_quant_report(report, output)


def _print_quant_report(report, output: Path) -> None:
    from rich import box
    from rich.table import Table

    from edgekiln.quantization.report_writer import format_db

    table = Table(title=f"worst layers of {report.model} ({report.quant})", title_justify="left", box=box.SIMPLE)
    table.add_column("layer", overflow="fold", ratio=1)
    table.add_column("op", overflow="fold")
    for column in ("alone dB", "share", "layer dB", "accum dB"):
        table.add_column(column, justify="right", no_wrap=True)
    for layer in report.worst_layers(10):
        share = f"{layer.noise_share:.0%}" if layer.noise_share is not None else "–"
        table.add_row(layer.name, layer.op_type, format_db(layer.sensitivity_db), share,
                      format_db(layer.sqnr_layerwise_db), format_db(layer.sqnr_accumulated_db))
    console.print(table)
    console.print("alone: output SQNR with only that layer quantized; share: its part of the output noise; "
                  "layer: its own error (float inputs); accum: error carried to its output", soft_wrap=True)
    calibration = report.calibration
    held = "held out" if calibration["held_out"] else "also used for calibration"
    console.print(f"output SQNR {format_db(report.output_sqnr_db)} dB on {calibration['eval_samples']} sample(s) "
                  f"({held}); {report.sensitivity['note']}", soft_wrap=True)
    for suggestion in report.suggestions:
        option = f": {suggestion.option}" if suggestion.option else ""
        console.print(f"- [{suggestion.kind}] {suggestion.message}{option}", soft_wrap=True, markup=False)
    if report.fix is not None:
        fix = report.fix
        goal = "" if fix.reached or fix.mode == "count" else f" (target {fix.requested:g} dB not reached)"
        console.print(f"keeping {len(fix.patterns)} layer(s) in float: output SQNR {format_db(fix.before_db)} -> "
                      f"{format_db(fix.after_db)} dB{goal}", soft_wrap=True)
        console.print(fix.command, soft_wrap=True, markup=False)
    console.print(f"wrote {output / 'report.html'} and report.json")


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--input", "-i", "input_specs", multiple=True, required=True, metavar="[NAME=]FILE",
              help="Input data: x.npy for a one-input model, NAME=FILE.npy per input, or one .npz.")
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="Write outputs here: .npy (one output) or .npz (all outputs by name).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads of the arm_cpu runtime.")
@click.option("--device", "-d", metavar="DEVICE",
              help="Where an arm_cpu artifact runs: local, qemu[:CPU], ssh://USER@HOST[:PORT], adb[:SERIAL] "
                   "(default: local for host artifacts, qemu for ARM ones).")
def run(artifact: Path, input_specs: tuple[str, ...], output: Path | None, threads: int = 1,
        device: str | None = None) -> None:
    """Run a compiled ARTIFACT on input data."""
    from edgekiln.compiler.artifact import Artifact

    loaded = Artifact.load(artifact)
    inputs = _read_inputs(input_specs, [s["name"] for s in loaded.input_specs])
    if loaded.manifest["runner"] == "arm_cpu":
        from edgekiln.backends.arm_cpu.runner import ArmCpuRunner

        runner = ArmCpuRunner(loaded.files, loaded.manifest, transport=device)
        outputs = runner.run(loaded._check_inputs(inputs), threads=threads)
    elif device is not None or threads != 1:
        raise OptionError(f"--device and --threads apply to arm_cpu artifacts; this one runs with "
                          f"{loaded.manifest['runner']}")
    else:
        outputs = loaded.run(inputs)
    for name, value in outputs.items():
        flat = value.reshape(-1)
        preview = np.array2string(flat[:6], precision=4, separator=", ")
        console.print(f"{name}: {value.dtype}{list(value.shape)} {preview}{' ...' if flat.size > 6 else ''}",
                      soft_wrap=True)
        if value.ndim == 2 and value.shape[0] == 1 and value.shape[1] > 1:
            # A [1, K] output is almost always class scores: show the winner.
            console.print(f"{name}: top-1 class {int(np.argmax(value))} (score {float(np.max(value)):.4f})")
    if output is not None:
        _write_outputs(output, outputs)


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--device", "-d", metavar="DEVICE",
              help="local, qemu[:CPU], ssh://USER@HOST[:PORT] or adb[:SERIAL] (default: local for host "
                   "artifacts, qemu with the target's CPU model for ARM ones).")
@click.option("--repeat", type=click.IntRange(min=1), default=10, show_default=True, help="Timed runs.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True, help="Untimed runs first.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="Runtime threads.")
@click.option("--measure", type=click.Choice(["time", "instructions"]),
              help="Cost per call: wall time, or guest instructions under qemu (default: instructions under "
                   "qemu, time elsewhere).")
@click.option("--isa", default="auto", show_default=True, help="GEMM path: auto, c, neon, dotprod, i8mm, avx2, avxvnni, avx512vnni.")
@click.option("--input", "-i", "input_specs", multiple=True, metavar="[NAME=]FILE",
              help="Input data (.npy/.npz); default: seeded random data of the input shapes.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the report as JSON here.")
@click.option("--top", type=int, default=20, show_default=True, help="Rows of the per-op table (0: all).")
def bench(artifact: Path, device: str | None, repeat: int, warmup: int, threads: int, measure: str | None,
          isa: str, input_specs: tuple[str, ...], json_path: Path | None, top: int) -> None:
    """Latency, memory and a per-op profile of a compiled ARTIFACT on a device."""
    from edgekiln.compiler.artifact import Artifact
    from edgekiln.compiler.onnx_file import write_atomically
    from edgekiln.profiler.bench_artifact import bench_artifact

    loaded = Artifact.load(artifact)
    inputs = _read_inputs(input_specs, [s["name"] for s in loaded.input_specs]) if input_specs else None
    with err_console.status(f"benchmarking {artifact} ({measure or 'default measure'})"):
        report = bench_artifact(loaded, device=device, repeat=repeat, warmup=warmup, threads=threads,
                                measure=measure, isa=isa, inputs=inputs)
    report.render(console, top=top or None)
    if json_path is not None:
        write_atomically(json_path, report.to_json().encode())
        console.print(f"wrote {json_path}")


def _read_inputs(specs: tuple[str, ...], input_names: list[str]) -> dict[str, np.ndarray]:
    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, file = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path = Path(file)
        if not path.is_file():
            raise OptionError(f"--input {spec}: no such file {path}")
        try:
            data = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise OptionError(f"--input {spec}: {path} is not a .npy/.npz file ({exc})") from None
        if isinstance(data, np.lib.npyio.NpzFile):
            inputs.update({key: data[key] for key in data.files})
            continue
        if not name:
            if len(input_names) != 1:
                raise OptionError(f"--input {spec}: the model has inputs {', '.join(input_names)}; use NAME=FILE.npy")
            name = input_names[0]
        inputs[name] = data
    return inputs


def _write_outputs(output: Path, outputs: dict[str, np.ndarray]) -> None:
    import io

    from edgekiln.compiler.onnx_file import write_atomically

    buffer = io.BytesIO()
    if output.suffix == ".npz":
        np.savez(buffer, **outputs)
    elif len(outputs) == 1:
        np.save(buffer, next(iter(outputs.values())))
    else:
        raise OptionError(f"--output {output}: the model has {len(outputs)} outputs; write them to a .npz file")
    write_atomically(output, buffer.getvalue())
    console.print(f"wrote {output}")


if __name__ == "__main__":
    sys.exit(main())
