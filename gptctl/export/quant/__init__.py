"""Weight quantization methods for `gptctl export --quantize` (see `registry` for the table).

Light on import: only the registry is imported here; methods are imported when an export runs.
"""

from gptctl.export.quant.registry import QUANT_CHOICES, QUANT_METHODS, load_method

__all__ = ["QUANT_CHOICES", "QUANT_METHODS", "load_method"]
