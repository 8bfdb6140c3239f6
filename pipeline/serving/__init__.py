"""Serving the artifacts: the Service behind the demo, the Open Inference Protocol (routes, wire format,
client), and NVIDIA Triton (names, the model repository, the Python-backend model, the real server).

Nothing here imports torch at module level.
"""
