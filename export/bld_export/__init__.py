"""bld_export: ONNX export of trained bld runs to self-describing, validated bundles.

Where to look: `graphs` declares every exported graph (I/O, shapes, how it is built, TensorRT
profiles); `export.export_bundle` writes a bundle; `validate` holds the checks that fail an
export; `flops` counts FLOPs per image from a graph; `cli` is the `bld-export` command. This
module stays light (no torch), so `bld-export inspect` starts fast.
"""

from .errors import ExportError, ValidationError

__all__ = ["ExportError", "ValidationError"]
