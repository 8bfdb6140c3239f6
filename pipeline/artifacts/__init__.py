"""What export leaves on disk and every later stage reads: the manifest, atomic files, tensor declarations.

Nothing here imports torch or onnxruntime.
"""
