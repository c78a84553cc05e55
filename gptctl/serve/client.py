"""Talking to a running `gptctl serve` from the command line: the swap call (loadtest has its own module)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput, CheckFailed


def auth_headers(api_key_env: str | None) -> dict[str, str]:
    if not api_key_env:
        return {}
    key = os.environ.get(api_key_env, "").strip()
    if not key:
        raise BadInput(f"--api-key-env {api_key_env}: the variable is unset or empty", f"export {api_key_env}=<key>")
    return {"Authorization": f"Bearer {key}"}


def swap(url: str, artifact: str, *, api_key_env: str | None = None, timeout: float = 300.0) -> dict[str, Any]:
    """POST /admin/swap; returns {"previous", "current", "artifact"}. Raises CheckFailed when the server
    refuses or the new version fails to load or warm (the old one keeps serving), BadInput when unreachable."""
    import httpx

    local = Path(artifact).expanduser()
    # The server resolves the path on its own machine; an absolute path is right whenever it is this one.
    path = str(local.resolve()) if local.exists() else artifact
    try:
        response = httpx.post(
            url.rstrip("/") + "/admin/swap", json={"artifact": path}, headers=auth_headers(api_key_env), timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise BadInput(f"cannot reach {url}: {exc}", "start it with `gptctl serve ARTIFACT` or check --url") from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        message = (body.get("error") or {}).get("message") or response.text[:300]
        raise CheckFailed(
            f"swap refused (HTTP {response.status_code}): {message}", "the previous version is still serving"
        )
    return body
