"""FPGA backend: lowers a Program to a Vitis HLS C++ dataflow project (testbench, tcl, resource estimates)."""
