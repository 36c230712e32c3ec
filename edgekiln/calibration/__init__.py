"""Calibration data readers and observers (issue 4: quantization). Empty until then."""
