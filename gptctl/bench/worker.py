"""One benchmark backend in its own process, so peak memory, threads and GPU state are its own.

Reads a JSON spec on stdin ({"backend": name, ...}) and prints one JSON result line on stdout.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    spec = json.loads(sys.stdin.read())
    # Keep stdout for the result: library chatter goes to stderr.
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        from gptctl.bench.registry import get_backend

        result = get_backend(spec["backend"]).measure(spec)
    except Exception as exc:  # reported, never raised past the worker
        result = {"available": False, "reason": f"{type(exc).__name__}: {exc}"[:800]}
    sys.stdout.flush()
    os.dup2(real_stdout, 1)
    sys.stdout.write("GPTCTL-RESULT " + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
