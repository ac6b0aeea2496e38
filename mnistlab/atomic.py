"""Atomic file writes: a kill at any moment leaves the target whole or absent.

Each writer goes to a temporary file in the target's folder (same file system,
so the final os.replace is atomic), is flushed and fsynced, then renamed.
"""
import contextlib
import json
import os
import tempfile

UMASK = os.umask(0)
os.umask(UMASK)  # reading the umask means setting it; put it straight back


@contextlib.contextmanager
def atomic_path(path, suffix=".part"):
    """Yield a temporary path beside `path`; rename it onto `path` on success."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=suffix, dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes files private; results should get the usual mode
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """open() for writing whose result appears only when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def write_text(path, text):
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
