"""ONNX Runtime sessions per execution provider, and the truth about which provider is active.

onnxruntime-gpu lists CUDA and TensorRT in `get_available_providers()` even on a machine without a GPU,
and falls back to CPU when they fail to initialise. The only truth is `session.get_providers()` after
the session exists; a requested provider that is not first there is reported unavailable, with the
reason ONNX Runtime printed while trying.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gptctl.errors import CheckFailed


@dataclass(frozen=True)
class ExecutionProvider:
    """One execution provider gptctl can measure and serve on."""

    ort_name: str  # ONNX Runtime's name for it
    device: str  # "cpu" or "cuda": where its session's inputs and KV cache live (I/O binding)
    backend: str = "onnxruntime"  # the bench backend that measures it (a key of gptctl.bench.registry.BACKEND_CLASSES)


# The one table of execution providers: option and CLI choices, ORT names, devices, bench backends and
# the order results are listed in all come from it. Adding a provider is one line here.
EXECUTION_PROVIDERS: dict[str, ExecutionProvider] = {
    "cpu": ExecutionProvider("CPUExecutionProvider", "cpu"),
    "cuda": ExecutionProvider("CUDAExecutionProvider", "cuda"),
    "tensorrt": ExecutionProvider("TensorrtExecutionProvider", "cuda"),
}
PROVIDER_NAMES = {name: p.ort_name for name, p in EXECUTION_PROVIDERS.items()}


def device_of(name: str) -> str:
    """Where a session on provider `name` keeps its tensors: "cpu" or "cuda"."""
    return EXECUTION_PROVIDERS[name].device


@contextlib.contextmanager
def captured_output() -> Iterator[dict[str, str]]:
    """Capture what native code and Python write to fds 1 and 2 while a session is created.

    ONNX Runtime logs provider failures on fd 2 and its Python wrapper prints "EP Error" blocks on
    stdout, which would corrupt `--json` output; both are kept for the `reason` instead.
    """
    import io
    import sys

    box = {"text": ""}
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    py_text = io.StringIO()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no usable fds: capture Python-level output only
        with contextlib.redirect_stdout(py_text), contextlib.redirect_stderr(py_text):
            yield box
        box["text"] = py_text.getvalue()
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            # sys.stdout may not write to fd 1 (test runners, notebooks): redirect it as well.
            with contextlib.redirect_stdout(py_text), contextlib.redirect_stderr(py_text):
                yield box
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            box["text"] = tmp.read().decode(errors="replace") + py_text.getvalue()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ORT_PREFIX = re.compile(r"^.*?\[ONNXRuntimeError\] : \d+ : \w+ : |^\S+ \S+ \[\w:onnxruntime:[^\]]*\] ")


def _reason_from_log(text: str) -> str:
    # Keep the lines that say why (library not found, no device), without ORT's timestamps and paths.
    found = []
    for line in _ANSI.sub("", text).splitlines():
        line = _ORT_PREFIX.sub("", line.strip()).strip()
        line = re.sub(r"^\S+\.(cc|h):\d+ \S.*?\) ", "", line)
        if (
            line
            and re.search(r"(?i)fail|error|cannot|not found|unable|no cuda|driver|install", line)
            and line not in found
        ):
            found.append(line)
    return " | ".join(found[:2])[:500]


def session_options(threads: int | None = None, *, optimization: str = "all"):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[optimization]
    so.log_severity_level = 3
    return so


def create_session(model: Any, provider: str = "cpu", *, threads: int | None = None, optimization: str = "all"):
    """Create an InferenceSession asking for `provider` first (CPU as fallback).

    Returns (session or None, info) where info = {"provider", "ort_provider", "available", "reason",
    "active_providers", "session_s"}. `available` is True only when `provider` is really the first
    active provider of the session.
    """
    import onnxruntime as ort

    wanted = PROVIDER_NAMES[provider]
    info: dict[str, Any] = {
        "provider": provider,
        "ort_provider": wanted,
        "available": False,
        "reason": None,
        "active_providers": [],
        "session_s": None,
    }
    listed = ort.get_available_providers()
    if wanted not in listed:
        info["reason"] = f"{wanted} is not in this onnxruntime build ({ort.__version__}: {', '.join(listed)})"
        return None, info
    providers = [wanted] if provider == "cpu" else [wanted, "CPUExecutionProvider"]
    so = session_options(threads, optimization=optimization)
    t0 = time.perf_counter()
    session = None
    with captured_output() as log:
        try:
            session = ort.InferenceSession(model, so, providers=providers)
        except Exception as exc:  # ORT raises plain RuntimeError/Fail subclasses
            error = f"{type(exc).__name__}: {exc}"
        else:
            error = None
    info["session_s"] = round(time.perf_counter() - t0, 4)
    if session is None:
        info["reason"] = f"session creation with {wanted} failed: {error}"[:800]
        return None, info
    active = session.get_providers()
    info["active_providers"] = active
    if active and active[0] == wanted:
        info["available"] = True
        return session, info
    why = _reason_from_log(log["text"])
    info["reason"] = f"{wanted} was requested but the session runs on {active} (ONNX Runtime fell back silently)" + (
        f": {why}" if why else ""
    )
    return None, info


def _probe_model() -> bytes:
    """A one-node float graph: enough to see whether a provider initialises, without any model."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def probe_providers(names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Which providers really initialise here: {name: {"available", "reason", "active_providers"}}.

    `names=None` probes every provider ONNX Runtime lists (and CPU).
    """
    import onnxruntime as ort

    if names is None:
        listed = set(ort.get_available_providers())
        names = [short for short, long in PROVIDER_NAMES.items() if long in listed or short == "cpu"]
    model = _probe_model()
    out = {}
    for name in names:
        _, info = create_session(model, name, threads=1)
        out[name] = info
    return out


def resolve_providers(requested: list[str] | None, required: list[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Which providers to measure, and the probe result of each one considered.

    `requested=None` means every provider ONNX Runtime lists; those that do not really initialise are kept
    in the result as `available: false` with the reason, and are not measured.
    """
    names = list(dict.fromkeys((requested or []) + list(required))) if requested is not None else None
    probes = probe_providers(names)
    if requested is None:
        for name in required:
            if name not in probes:
                probes.update(probe_providers([name]))
    order = [n for n in EXECUTION_PROVIDERS if n in probes]
    return order, probes


def check_required(probes: dict[str, dict[str, Any]], required: list[str]) -> None:
    missing = [n for n in required if not probes.get(n, {}).get("available")]
    if missing:
        details = [f"{n}: {probes.get(n, {}).get('reason') or 'not measured'}" for n in missing]
        raise CheckFailed(
            f"required execution provider{'s' if len(missing) > 1 else ''} not active: {', '.join(missing)}",
            "run on a machine where it initialises (GPU, drivers, CUDA/cuDNN/TensorRT libraries), or drop --require-provider",  # noqa: E501
            details=details,
        )


# ONNX Runtime's words for a file it cannot parse: bad input (exit 2), not a provider failure.
_UNREADABLE = ("INVALID_PROTOBUF", "NO_SUCHFILE", "Protobuf parsing failed", "external data", "External data")


def open_session(path: Any, provider: str, *, threads: int | None, what: str) -> tuple[Any, dict[str, Any]]:
    """A session on an exported graph file, or one clear error: `what` names the export that makes it.

    Raises:
        BadInput: the file is missing, not a file, or not a readable ONNX model (truncated, corrupt).
        CheckFailed: the provider did not become the session's active provider (the reason says why).
    """
    from pathlib import Path

    from gptctl.errors import BadInput

    path = Path(path)
    if not path.is_file():
        raise BadInput(
            f"{path}: {'is a directory, not' if path.is_dir() else 'no such'} ONNX file",
            f"pass the model.onnx of a {what} output",
        )
    session, info = create_session(str(path), provider, threads=threads)
    if session is None:
        reason = str(info["reason"])
        if any(mark in reason for mark in _UNREADABLE):
            raise BadInput(
                f"{path} is not a readable ONNX model (truncated or corrupt?): {reason}",
                "export it again, or copy the whole file (and the .onnx_data beside it)",
            )
        raise CheckFailed(reason, f"open it with another provider than {provider!r}, or fix the provider's setup")
    return session, info
