"""Calibration: data readers, streaming observers, range collection, a statistics cache, data-free inputs.

    data = open_calibration_data("calib.npz", graph.inputs)      # or a folder, "synthetic", an iterable
    ranges = calibrate(graph, data, method="entropy")             # {value name: ActivationRange}
"""

from edgekiln.calibration.calibration_data import (
    CalibrationData,
    InputSpec,
    open_calibration_data,
)
from edgekiln.calibration.collect import ActivationRange, calibrate
from edgekiln.calibration.image_folder import ImagePreprocessing
from edgekiln.calibration.observers import (
    EntropyObserver,
    MinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    make_observer,
)

__all__ = [
    "ActivationRange",
    "CalibrationData",
    "EntropyObserver",
    "ImagePreprocessing",
    "InputSpec",
    "MSEObserver",
    "MinMaxObserver",
    "Observer",
    "PercentileObserver",
    "calibrate",
    "make_observer",
    "open_calibration_data",
]
