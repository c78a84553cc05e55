"""What makes a step's result reusable: a fingerprint of its inputs' content, its options and gptctl's
version, recorded beside the run once the step has finished, and compared on the next run.

The record lives in WORKDIR/.gptctl-run/NAME.json and is written (atomically) only after the step's
output folder is complete, so an interrupted step is never taken as done; a `NAME.running` marker
left behind by a killed run is how the next run can say "interrupted".
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from gptctl import __version__
from gptctl.manifest import sha256_path

STATE_DIR = ".gptctl-run"

_hash_memo: dict[tuple, str] = {}


def content_hash(path: Path) -> str:
    """sha256 of a file or folder, memoised per (path, size, mtime) so one run hashes each input once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, signature(path) if path.is_dir() else None)
    if key not in _hash_memo:
        _hash_memo[key] = sha256_path(path)
    return _hash_memo[key]


def signature(path: Path) -> str:
    """A cheap fingerprint of a folder's files (names, sizes, mtimes) to notice edits by hand."""
    h = hashlib.sha256()
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(p) if f != p else f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def model_identity(spec: str) -> dict[str, Any]:
    """What identifies the content of a model reference (a local path, pkg:, a selection, a Hub id)."""
    from gptctl.errors import GptctlError
    from gptctl.model_source import resolve_model

    try:
        src = resolve_model(spec)
    except GptctlError as exc:
        return {"spec": spec, "unavailable": exc.message}
    return _source_identity(src)


def _source_identity(src) -> dict[str, Any]:
    ident: dict[str, Any] = {"kind": src.kind}
    if src.hub_id:
        # A Hub snapshot folder is named by its commit: that identifies the content without hashing GBs.
        ident.update(hub_id=src.hub_id, revision=src.path.name if src.path else None)
    elif src.path is not None:
        ident["sha256"] = content_hash(src.content_path())
    if src.selection is not None:
        ident["selection"] = src.selection.get("model", {}).get("id")
    if src.base is not None:
        ident["base"] = _source_identity(src.base)
    return ident


def fingerprint(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def state_path(workdir: Path, name: str) -> Path:
    return workdir / STATE_DIR / f"{name}.json"


def read_state(workdir: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(state_path(workdir, name).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_state(workdir: Path, name: str, state: dict[str, Any]) -> None:
    path = state_path(workdir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps({**state, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2, default=str)
    )
    os.replace(tmp, path)


def mark_running(workdir: Path, name: str, fingerprint: str = "", run: str = "") -> None:
    """Forget the previous result before the step starts, and leave a marker until it finishes.

    The marker records the step's fingerprint, so the next run resumes a checkpoint the killed run
    left only when it was made by the same inputs and options.
    """
    state_path(workdir, name).unlink(missing_ok=True)
    marker = _marker(workdir, name)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"pid": os.getpid(), "fingerprint": fingerprint, "run": run}))


def clear_running(workdir: Path, name: str) -> None:
    _marker(workdir, name).unlink(missing_ok=True)


def was_interrupted(workdir: Path, name: str) -> bool:
    return _marker(workdir, name).exists()


def interrupted_run(workdir: Path, name: str) -> dict[str, Any] | None:
    """What the marker of an interrupted step recorded ({} for an older, PID-only marker), or None."""
    try:
        text = _marker(workdir, name).read_text()
    except OSError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _marker(workdir: Path, name: str) -> Path:
    return state_path(workdir, name).with_suffix(".running")


def why_rerun(prev: dict[str, Any] | None, now: dict[str, Any], output: Path, interrupted: bool) -> str | None:
    """None when the previous result can be reused; otherwise the reason to run, in words."""
    if prev is None:
        return "interrupted last time; running it again" if interrupted else "no finished run yet"
    reasons = []
    if prev.get("gptctl_version") != __version__:
        reasons.append(f"gptctl version changed ({prev.get('gptctl_version')} -> {__version__})")
    for key in ("kind", "method"):
        if prev.get(key) != now.get(key):
            reasons.append(f"{key} changed ({prev.get(key)} -> {now.get(key)})")
    old_opts, new_opts = prev.get("options", {}), now.get("options", {})
    for key in sorted(set(old_opts) | set(new_opts), key=str):
        if old_opts.get(key) != new_opts.get(key):
            reasons.append(
                f"option {key} changed ({_short(old_opts.get(key, '(unset)'))} -> {_short(new_opts.get(key, '(unset)'))})"  # noqa: E501
            )
    old_in, new_in = prev.get("inputs", {}), now.get("inputs", {})
    for key in sorted(set(old_in) | set(new_in), key=str):
        if old_in.get(key) != new_in.get(key):
            new = new_in.get(key)
            steps = [x["step"] for x in new] if isinstance(new, list) else []
            why = f" (new result from step {', '.join(steps)})" if steps else " (its content differs)"
            reasons.append(f"input {key} changed{why}")
    if prev.get("sources") != now.get("sources"):
        reasons.append("sources changed")
    if not reasons and prev.get("fingerprint") != now.get("fingerprint"):
        reasons.append("inputs changed")
    if not reasons:
        if not output.exists():
            reasons.append(f"output {output} is missing")
        elif signature(output) != prev.get("output_signature"):
            reasons.append(f"output {output} was modified since it was written")
    return "; ".join(reasons) or None


def _short(v: Any) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 40 else s[:37] + "..."
