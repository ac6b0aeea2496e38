"""Single files, written atomically: a kill at any moment leaves the target whole or absent.

Each writer goes to a temporary file in the target's folder (same file system,
so the final os.replace is atomic), is flushed and fsynced, then renamed.
An OSError while writing becomes one MnistlabError through cannot_write, the
one place that words it.
"""

import contextlib
import json
import os
import tempfile

from mnistlab.errors import MnistlabError

UMASK = os.umask(0)
os.umask(UMASK)  # reading the umask means setting it; put it straight back


def cannot_write(path, error, what=None):
    """The MnistlabError for OSError `error` while writing `path`:
    "cannot write <what> <path>: <reason>" (raise it `from None`: the reason is in the line)."""
    what = f"{what} " if what else ""
    return MnistlabError(f"cannot write {what}{os.fspath(path)}: {error.strerror or error}")


# ----------------------------------------------------------------------------- writing


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


def write_bytes(path, data, suffix=".part"):
    with atomic_path(path, suffix=suffix) as tmp, open(tmp, "wb") as f:
        f.write(data)


def prepare(path):
    """Create folder `path` up front, so an unwritable --out fails before any work is done."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write-test")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
        os.unlink(probe)
    except OSError as e:
        raise cannot_write(path, e, "to output folder") from None
    return path


# ----------------------------------------------------------------------------- reading


def read_json(path, default=None):
    """A JSON file's content; `default` when it is absent, or an error when no default is given."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        if default is None:
            raise MnistlabError(f"{path}: missing")
        return default
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise MnistlabError(f"{path}: cannot read it as JSON ({e})") from None


def read_bytes(path):
    """A file's bytes, or None when it is absent."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
