"""EdgeTPU backend: lowers a Program to a fully int8 TFLite model for the Coral Edge TPU compiler."""
