"""Atomic output directories: work beside the target, rename at the end.

An interrupted or failed step never leaves something at `--output` that looks finished:
the work happens in a hidden sibling directory that is renamed into place only on success.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gptctl.errors import BadInput


def check_output_dir(target: str | os.PathLike, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Refuse a non-empty output directory unless overwrite/resume was asked for (before any model loads)."""
    t = Path(target)
    if t.exists() and not t.is_dir():
        raise BadInput(f"--output {t} exists and is not a directory", "choose another --output path")
    if t.is_dir() and any(t.iterdir()) and not (overwrite or resume):
        raise BadInput(f"--output {t} is not empty", "pass --overwrite to replace it, or choose another directory")
    return t


@contextlib.contextmanager
def atomic_output_dir(target: str | os.PathLike, *, work_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a fresh working directory; on success it replaces `target`, on failure it is removed.

    `work_dir` lets a resumable step reuse a stable working directory (kept on failure).
    """
    t = Path(target).resolve()
    t.parent.mkdir(parents=True, exist_ok=True)
    keep_on_failure = work_dir is not None
    if work_dir is None:
        work = Path(tempfile.mkdtemp(prefix=f".{t.name}.partial-", dir=t.parent))
        # mkdtemp makes the directory private (0700); the finished output should get the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        work.chmod(0o777 & ~umask)
    else:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    except BaseException:
        if not keep_on_failure:
            shutil.rmtree(work, ignore_errors=True)
        raise
    _apply_umask(work)
    # Replace the old target only now that the new output is complete.
    if t.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{t.name}.old-", dir=t.parent))
        os.replace(t, old / "x")
        os.replace(work, t)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, t)


def _apply_umask(directory: Path) -> None:
    """Give every file the mode the umask gives a new file (0644 under umask 022).

    safetensors 0.8 writes through a private temporary file, so weights came out 0600 while the
    config beside them was 0644: another user (a server, a CI job) could read the config, not the model.
    """
    umask = os.umask(0)
    os.umask(umask)
    for f in directory.rglob("*"):
        if f.is_file() and not f.is_symlink():
            f.chmod((0o666 | (f.stat().st_mode & 0o111)) & ~umask)


# The hidden siblings an output directory may have (names made by atomic_output_dir and by training):
# `.NAME.partial-*` a write in progress, `.NAME.old-*` the previous output being swapped out, and
# `.NAME.work` a training working directory that keeps checkpoints for a resume.
_LEFTOVER_TAGS = (".partial-", ".old-")
RESUMABLE_WORK_SUFFIX = ".work"


def resumable_work_dir(target: str | os.PathLike) -> Path:
    """The stable working directory a resumable step (training) keeps beside `target`."""
    t = Path(target).resolve()
    return t.parent / f".{t.name}{RESUMABLE_WORK_SUFFIX}"


def leftover_work_dirs(target: str | os.PathLike) -> list[Path]:
    """Work folders of `target` that a killed writer left behind (`.NAME.partial-*`, `.NAME.old-*`).

    Only the caller knows no writer is still at work (the recipe runner holds the workdir lock);
    a training `.NAME.work` folder is not listed: it holds a checkpoint to resume from.
    """
    t = Path(target).resolve()
    if not t.parent.is_dir():
        return []
    return sorted(p for tag in _LEFTOVER_TAGS for p in t.parent.glob(f".{t.name}{tag}*") if p.is_dir())


def remove_leftovers(target: str | os.PathLike) -> list[Path]:
    """Delete what `leftover_work_dirs` lists; return what was removed."""
    found = leftover_work_dirs(target)
    for p in found:
        shutil.rmtree(p, ignore_errors=True)
    return found
