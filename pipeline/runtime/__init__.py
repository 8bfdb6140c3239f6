"""Running artifacts in this process: devices, one loader per (format, runtime), the predictor, input parsing
and the parity check that proves every artifact against eager.

Loading an ONNX artifact never imports torch.
"""
