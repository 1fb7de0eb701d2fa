"""Writing outputs so that a crash leaves each file complete or absent, never half-written."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from vaebic.errors import VaebicError


@contextmanager
def _writable(path: Path):
    """An OS error while creating or replacing an output (a path under a file, no permission, a
    full disk) becomes one line that names the output, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise VaebicError(
            f"cannot write {path}: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename and str(exc.filename) != str(path) else ''}"
        ) from None


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", *, fsync: bool = False):
    """Yield a file open on a temporary file beside path; on success it is renamed over path
    (atomic on POSIX), on error removed. fsync=True flushes it to disk first, so that the new
    contents survive a power cut, not only a crash of the process."""
    path = Path(path)
    with _writable(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, mode) as f:
                yield f
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write to a temporary file beside path, then rename it over path."""
    with atomic_file(path) as f:
        f.write(text)


def write_json_atomic(path: str | Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def write_npz_atomic(path: str | Path, arrays: dict) -> None:
    """numpy arrays by name into an uncompressed .npz, written aside and renamed over path."""
    import numpy as np

    with atomic_file(path, "wb") as f:
        np.savez(f, **arrays)


@contextmanager
def atomic_folder(final: str | Path):
    """Yield a temporary folder beside `final`; on success it replaces `final`, on error it is removed."""
    final = Path(final)
    with _writable(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        with _writable(final):
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staged_files(dest: str | Path):
    """Yield a temporary folder inside dest; on success each file in it is moved into dest (one
    atomic rename each), on error the folder is removed and dest keeps its previous files."""
    dest = Path(dest)
    with _writable(dest):
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".staged.", dir=dest))
    try:
        yield tmp
        with _writable(dest):
            for f in tmp.iterdir():
                os.replace(f, dest / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
