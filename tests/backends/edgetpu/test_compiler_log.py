"""edgetpu_compiler log parsing, and the compiler step with a fake edgetpu_compiler on PATH.

The recorded logs below are WRITTEN BY HAND from the documented format (Coral's compiler page and
the outputs users quote in google-coral/edgetpu issues); the real compiler is not installable here.
"""

from __future__ import annotations

import json
import os
import stat
import textwrap

import pytest

pytest.importorskip("ai_edge_litert")

from edgekiln.backends.edgetpu import compiler_log_runner
from edgekiln.backends.edgetpu.compiler_log import merge_into_report, parse_compiler_log
from edgekiln.backends.edgetpu.report import report_from_tflite
from edgekiln.backends.edgetpu.report_files import edgetpu_report_files
from tests.backends.edgetpu.tflite_graphs import small_cnn

PARTLY_MAPPED = textwrap.dedent("""\
    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 12 ms.

    Input model: model.tflite
    Input size: 3.50KiB
    Output model: model_edgetpu.tflite
    Output size: 21.25KiB
    On-chip memory used for caching model parameters: 1.25KiB
    On-chip memory remaining for caching model parameters: 7.98MiB
    Off-chip memory used for streaming uncached model parameters: 0.00B
    Number of Edge TPU subgraphs: 1
    Total number of operations: 9
    Operation log: model_edgetpu.log

    Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
    Number of operations that will run on Edge TPU: 1
    Number of operations that will run on CPU: 8

    Operator                       Count      Status

    QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation
    CONV_2D                        1          Mapped to Edge TPU
    CONV_2D                        1          More than one subgraph is not supported
    LEAKY_RELU                     1          Operation not supported
    MEAN                           1          More than one subgraph is not supported
    FULLY_CONNECTED                1          More than one subgraph is not supported
    RESHAPE                        1          More than one subgraph is not supported
    SOFTMAX                        1          More than one subgraph is not supported
    DEQUANTIZE                     1          Operation is working on an unsupported data type
    Compilation child process completed within timeout period.
    Compilation succeeded!
    """)

VERSION_ERROR = textwrap.dedent("""\
    Edge TPU Compiler version 16.0.384591198
    ERROR: Didn't find op for builtin opcode 'CONV_2D' version '6'. An older version of this builtin might be supported. Are you using an old TFLite binary with a newer model?

    ERROR: Registration failed.

    Invalid model: model.tflite
    Model could not be parsed
    """)


def test_partly_mapped_log():
    log = parse_compiler_log(PARTLY_MAPPED)
    assert log.version == "16.0.384591198" and log.compiled and log.all_supported is False
    assert (log.tpu_ops, log.cpu_ops, log.total_ops, log.tpu_subgraphs) == (1, 8, 9, 1)
    assert log.on_chip_used_bytes == 1280 and log.off_chip_bytes == 0
    assert log.on_chip_remaining_bytes == round(7.98 * 1024 * 1024)
    assert len(log.rows) == 9 and sum(r.count for r in log.rows) == 9
    assert [r.operator for r in log.rows if r.mapped] == ["CONV_2D"]
    assert log.summary == "1 of 9 ops mapped to the Edge TPU (not all operations are supported)"


def test_stdout_and_log_file_tables_are_not_counted_twice():
    table = PARTLY_MAPPED[PARTLY_MAPPED.index("Operator "):]
    log = parse_compiler_log(PARTLY_MAPPED, "Edge TPU Compiler version 16.0.384591198\n" + table)
    assert sum(r.count for r in log.rows) == 9


def test_fully_mapped_log_without_the_warning_line():
    text = "Edge TPU Compiler version 16.0.384591198\nModel compiled successfully in 5 ms.\n\n" \
           "Operator                       Count      Status\n\nCONV_2D                        2          Mapped to Edge TPU\n"
    log = parse_compiler_log(text)
    assert log.compiled and log.all_supported is True and log.summary == "2 of 2 ops mapped to the Edge TPU"


def test_version_error_log():
    log = parse_compiler_log(VERSION_ERROR)
    assert not log.compiled and "CONV_2D' version '6'" in log.error
    assert log.summary.startswith("failed: Didn't find op")


def test_merge_pairs_statuses_and_lists_disagreements():
    report = report_from_tflite(small_cnn(middle="LEAKY_RELU"))
    merge_into_report(report, parse_compiler_log(PARTLY_MAPPED))
    convs = [op for op in report.ops if op["op"] == "CONV_2D"]
    assert [c["compiler_status"] for c in convs] == ["Mapped to Edge TPU", "More than one subgraph is not supported"]
    # The rules and this log agree on every operator.
    assert report.compiler["disagreements"] == []
    both_mapped = PARTLY_MAPPED.replace("CONV_2D                        1          Mapped",
                                        "CONV_2D                        2          Mapped")
    both_mapped = both_mapped.replace("CONV_2D                        1          More than one subgraph is not supported\n", "")
    merge_into_report(report, parse_compiler_log(both_mapped))
    assert report.compiler["disagreements"] == ["CONV_2D: rules map 1 of 2, edgetpu_compiler maps 2 of 2"]


FAKE_COMPILER = """#!/bin/sh
# A stand-in for edgetpu_compiler: edgetpu_compiler -s -o OUT MODEL
out="$3"; model="$4"
test "$1" = "-s" -a "$2" = "-o" || exit 9
cp "$model" "$out/model_edgetpu.tflite"
cat > "$out/model_edgetpu.log" <<'EOF'
{log}
EOF
echo "Edge TPU Compiler version 16.0.384591198"
echo "Model compiled successfully in 3 ms."
echo "Number of Edge TPU subgraphs: 1"
"""


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch):
    path = tmp_path / "bin" / "edgetpu_compiler"
    path.parent.mkdir()
    path.write_text(FAKE_COMPILER.replace("{log}", PARTLY_MAPPED))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{path.parent}{os.pathsep}{os.environ['PATH']}")
    return path


def test_report_files_with_a_fake_compiler_on_path(fake_compiler):
    tflite = small_cnn(middle="LEAKY_RELU")
    files, _, notes = edgetpu_report_files(tflite, "edgetpu")
    assert files["model_edgetpu.tflite"] == tflite  # the fake copies its input
    assert "Operator" in files["edgetpu_compiler.log"].decode()
    data = json.loads(files["edgetpu_report.json"])
    assert data["compiler"]["version"] == "16.0.384591198" and data["compiler"]["tpu_ops"] == 1
    assert "edgetpu_compiler" in files["edgetpu_report.txt"].decode() and notes == []


def test_failing_compiler_keeps_the_tflite_and_says_why(tmp_path, monkeypatch):
    (tmp_path / "stdout.txt").write_text(VERSION_ERROR)
    path = tmp_path / "edgetpu_compiler"
    path.write_text(f"#!/bin/sh\ncat {tmp_path / 'stdout.txt'}\nexit 1\n")
    path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    files, _, notes = edgetpu_report_files(small_cnn(), "edgetpu")
    assert "model_edgetpu.tflite" not in files and "CONV_2D' version '6'" in notes[0]


def test_absent_compiler_is_said_once(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(compiler_log_runner, "_absence_told", False)
    with pytest.warns(UserWarning, match="not on PATH"):
        files, _, notes = edgetpu_report_files(small_cnn(), "edgetpu")
    assert "not on PATH" in notes[0] and set(files) == {"edgetpu_report.json", "edgetpu_report.txt"}
    _, _, notes_again = edgetpu_report_files(small_cnn(), "edgetpu")
    assert notes_again == []
