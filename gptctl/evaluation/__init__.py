"""Evaluation shared by export, optimize and the recipes: reading held-out text, and perplexity.

Placed below the step packages (it imports only errors, model_source and numpy inside functions), so
that `gptctl.export` and `gptctl.optimize` share one reader and one definition without importing each
other. Light on import: nothing heavy at module level.
"""

from gptctl.evaluation.perplexity import perplexity_from_nll, perplexity_onnx
from gptctl.evaluation.records import (
    IGNORE,
    PPL_MAX_LENGTH,
    Dataset,
    Record,
    Sample,
    eval_samples,
    load_eval_records,
    read_records,
    tokenize,
)

__all__ = [
    "IGNORE",
    "PPL_MAX_LENGTH",
    "Dataset",
    "Record",
    "Sample",
    "eval_samples",
    "load_eval_records",
    "perplexity_from_nll",
    "perplexity_onnx",
    "read_records",
    "tokenize",
]
