"""Logging for gptctl: the library logs, the CLI decides where it goes, noise is silenced in a scope.

Library modules log through `logging.getLogger(__name__)` and never print. The CLI calls `configure`
once per command (`gptctl --verbose/--quiet`); whoever loads a model wraps the load in `quiet()`, which
drops third-party chatter for that block only and puts everything back afterwards, so warnings a user
must see elsewhere still show.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings
from collections.abc import Callable, Iterator

LOGGER = "gptctl"

# (root level, gptctl level) per verbosity: -1 --quiet, 0 default, 1 --verbose.
_LEVELS = {-1: (logging.WARNING, logging.WARNING), 0: (logging.WARNING, logging.INFO), 1: (logging.INFO, logging.DEBUG)}

# Messages that tell a user nothing they can act on, by the logger that emits them. transformers prints
# the legacy-tokenizer notice for every GGUF tokenizer load (twice per recipe step: slow and fast class).
KNOWN_NOISE: dict[str, tuple[str, ...]] = {
    "transformers.models.llama.tokenization_llama": ("You are using the default legacy behaviour",),
    "transformers.models.llama.tokenization_llama_fast": ("You are using the default legacy behaviour",),
    "transformers.models.t5.tokenization_t5": ("You are using the default legacy behaviour",),
}
# `warnings.warn` messages (regular expressions, matched at the start) of the same kind.
KNOWN_NOISE_WARNINGS: tuple[str, ...] = ("You are using the default legacy behaviour",)
# Modules that draw tqdm bars of their own (not through transformers' switch): the GGUF dequantisation
# bar updates once per tensor, hundreds of lines per load in a CI log.
_TQDM_MODULES = ("transformers.modeling_gguf_pytorch_utils",)


def configure(verbosity: int, handler: logging.Handler) -> None:
    """Send log records to `handler` (the CLI's stderr console): by default warnings from everyone and
    gptctl's info; `verbosity` 1 adds gptctl's debug and others' info, -1 leaves warnings only.

    Idempotent: a second call replaces the handler the first one installed.
    """
    root_level, own_level = _LEVELS[max(-1, min(1, verbosity))]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_gptctl", False)]:
        root.removeHandler(old)
    handler._gptctl = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(root_level)
    logging.getLogger(LOGGER).setLevel(own_level)


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


@contextlib.contextmanager
def quiet(*logger_names: str, level: int = logging.ERROR, progress_bars: bool = False) -> Iterator[None]:
    """Silence third-party noise inside the block; restore every level, filter and switch on exit.

    - each logger in `logger_names` logs only at `level` and above (e.g. quiet("onnxruntime.quantization"));
    - the known-noise messages (KNOWN_NOISE, KNOWN_NOISE_WARNINGS) are dropped, other warnings still show;
    - unless `progress_bars`, transformers' and huggingface_hub's tqdm bars are off, the GGUF
      dequantisation bar included (the caller shows one line or one gptctl progress bar instead).
    """
    with contextlib.ExitStack() as stack:
        for name in logger_names:
            stack.enter_context(_level(logging.getLogger(name), level))
        for name, prefixes in KNOWN_NOISE.items():
            stack.enter_context(_filter(logging.getLogger(name), _DropMessages(prefixes)))
        stack.enter_context(warnings.catch_warnings())
        for pattern in KNOWN_NOISE_WARNINGS:
            warnings.filterwarnings("ignore", message=re.escape(pattern))
        if not progress_bars:
            stack.enter_context(_no_progress_bars())
        yield


@contextlib.contextmanager
def _level(logger: logging.Logger, level: int) -> Iterator[None]:
    before = logger.level
    logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(before)


@contextlib.contextmanager
def _filter(logger: logging.Logger, filt: logging.Filter) -> Iterator[None]:
    logger.addFilter(filt)
    try:
        yield
    finally:
        logger.removeFilter(filt)


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers' own switch (it also flips huggingface_hub's), plus the modules with bare tqdm bars.

    Only when transformers is already imported: the caller is about to load a model with it, and a
    scope that imported it would cost ~2 s where nothing needed silencing.
    """
    if "transformers" not in sys.modules:
        yield
        return
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    patched: list[tuple[object, Callable]] = []
    for name in _TQDM_MODULES:
        module = _import_quietly(name)
        if module is not None and callable(getattr(module, "tqdm", None)):
            patched.append((module, module.tqdm))
            module.tqdm = _disabled(module.tqdm)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module, original in patched:
            module.tqdm = original  # type: ignore[attr-defined]
        if was_on:
            hf_logging.enable_progress_bar()


def _import_quietly(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:  # e.g. the gguf package is missing: that module draws no bar then
        return None


def _disabled(tqdm: Callable) -> Callable:
    def no_bar(*args, **kwargs):
        kwargs["disable"] = True
        return tqdm(*args, **kwargs)

    no_bar.__wrapped__ = tqdm  # type: ignore[attr-defined]
    return no_bar
