"""Tests for edgekiln.calibration."""
