"""Write the small bundled example the README uses, into ``examples/`` at the repo root.

    python -m tests.zoo.make_example

* ``examples/digits_cnn.onnx``: the trained zoo ``digits_cnn`` (static batch 1, ~18 KB);
* ``examples/digits_input.npy``: one held-out digit, float32 (1, 1, 8, 8), pixels in [0, 1];
* ``examples/digits_label.txt``: its label, one line;
* ``examples/digits_calib.npy``: 64 other held-out digits, (64, 1, 8, 8), to calibrate with.

The digit is the first held-out one the exported model classifies correctly, so the
README's "run it" step shows a right answer on any machine.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

if __package__ in (None, ""):  # run as a file path: make `tests.zoo` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.zoo import zoo_accuracy, zoo_heldout, zoo_model  # noqa: E402


def first_correct_digit(model: Path, images: np.ndarray, labels: np.ndarray) -> int:
    """Index of the first held-out image that `model` (run by onnxruntime) gets right."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    for index in range(len(images)):
        logits = session.run(None, {input_name: images[index : index + 1]})[0]
        if int(logits.argmax()) == int(labels[index]):
            return index
    raise RuntimeError(f"{model} classifies no held-out digit correctly")


def make_example(out_dir: Path) -> list[Path]:
    """Write the four example files into `out_dir` and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images, labels = zoo_heldout("digits_cnn")
    model = out_dir / "digits_cnn.onnx"
    image = out_dir / "digits_input.npy"
    label = out_dir / "digits_label.txt"
    shutil.copyfile(zoo_model("digits_cnn"), model)
    index = first_correct_digit(model, images, labels)
    np.save(image, images[index : index + 1].astype(np.float32))
    label.write_text(f"{int(labels[index])}\n")
    calib = out_dir / "digits_calib.npy"
    others = [i for i in range(len(images)) if i != index][:64]
    np.save(calib, images[others].astype(np.float32))
    return [model, image, label, calib]


def main() -> None:
    out_dir = Path(__file__).resolve().parents[2] / "examples"
    for path in make_example(out_dir):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    print(f"digits_cnn held-out accuracy: {zoo_accuracy('digits_cnn'):.4f}")


if __name__ == "__main__":
    main()
