"""gptctl: from "which model?" to a fast, validated ONNX artifact in CI.

This package is imported by `gptctl --help`; keep it free of heavy imports
(torch, transformers, peft, optimum, onnxruntime are imported inside the
functions that need them).
"""

__version__ = "0.1.0"
