"""What a run folder and a search folder share: a path and its files, the report page, the
guard that names the folder when a write fails, and the lock that keeps a second writer out.

The lock. A process that writes a folder (train(out=...) from config.json to its last result,
--resume included, `mnistlab train` on to its report; a search from its settings to its best
model) first takes an exclusive fcntl.flock on `.lock` inside it, a small JSON file naming the
holder (pid, host, start time), written in place (the lock is on that very file, so not by
rename). A second process that prepares the same folder gets one MnistlabError naming the
folder and the holder, and has written nothing there. Only mnistlab's own writers take the
lock; readers (report, runs, evaluate) do not look at it. The lock belongs to the open file, so the kernel
drops it when its holder exits in any way, SIGKILL included: a `.lock` left behind by a killed
process is stale, its flock free, and the next writer simply takes it over. A holder that
ends normally removes the file (while still holding it; a taker checks that the file it locked
is still the one at `.lock`, else takes the new one).

Within one process the lock is counted, not taken again: flock on a second descriptor of the
same file conflicts even within a process, and `mnistlab train` holds the folder around
train(), which holds it too. Each hold is released on every way out of its block (errors,
Ctrl-C included), so a run interrupted in a notebook can be resumed there at once.
"""

import contextlib
import errno
import fcntl
import functools
import json
import os
import socket
import threading
import time

from mnistlab.errors import MnistlabError
from mnistlab.storage.files import cannot_write
from mnistlab.storage.files import prepare as check_writable

LOCK = ".lock"
REPORT = "report.html"

_held = {}  # this process's locks: the folder's real path -> [descriptor of its .lock, holds]
_held_guard = threading.Lock()


def writes(method):
    """Decorator of a Folder's writing methods: an OSError (a full disk, a folder made read-only)
    becomes one MnistlabError naming the folder, "cannot write run folder DIR: <reason>"."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError as e:
            raise cannot_write(self.path, e, self.KIND) from None

    return guarded


class Folder:
    """A folder mnistlab writes: RunFolder and SearchFolder name its files. Used as a context
    manager, it is prepared (created, checked writable, locked) for the block's writes."""

    KIND = "folder"  # in messages: "run folder", "search folder"
    FINISHED = None  # the file whose presence means the work finished (each kind names its own)
    REPORT = REPORT
    LOCK = LOCK

    def __init__(self, path):
        self.path = os.fspath(path)
        self.held = False  # whether this object holds the folder's lock

    def __repr__(self):
        return f"{type(self).__name__}({self.path!r})"

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def report_path(self):
        return self.file(self.REPORT)

    def finished(self):
        return os.path.exists(self.file(self.FINISHED))

    # -- the writer's lock

    def prepare(self):
        """Create the folder, lock it for this process and check it is writable; an unwritable
        folder or one another process is writing: one MnistlabError, nothing written there."""
        if not self.held:
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as e:
                raise cannot_write(self.path, e, "to output folder") from None
            acquire(self.path)
            self.held = True
            try:
                check_writable(self.path)  # the write probe, once the folder is ours
            except BaseException:
                self.close()
                raise
        return self

    def close(self):
        """Give this object's hold of the lock back (nothing when it holds none)."""
        if self.held:
            self.held = False
            release(self.path)

    def __enter__(self):
        return self.prepare()

    def __exit__(self, *exc):
        self.close()
        return False


# ----------------------------------------------------------------------------- the lock


def acquire(folder):
    """Lock `folder` (an existing folder) for this process, or count one more hold of it."""
    key = os.path.realpath(folder)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            return
        try:
            fd = take(os.path.join(key, LOCK), folder)
        except OSError as e:
            raise cannot_write(folder, e, "to output folder") from None
        _held[key] = [fd, 1]


def release(folder):
    """One hold of `folder` less; the last one removes .lock and unlocks it."""
    key = os.path.realpath(folder)
    with _held_guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1]:
            return
        del _held[key]
        with contextlib.suppress(OSError):  # the folder may have been deleted under us
            os.unlink(os.path.join(key, LOCK))  # removed while still locked: see the module's docstring
        os.close(entry[0])


def take(path, folder):
    """The descriptor of lock file `path`, flocked; a folder another process holds: MnistlabError."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(fd)
            os.close(fd)
            raise MnistlabError(f"{folder} is being written by {holder}; wait for it or choose another --out") from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                os.close(fd)
                raise
            # a file system without flock (some network mounts): go on unlocked, as before locks
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(current, os.fstat(fd)):
            break
        os.close(fd)  # the holder before us removed the file we locked: lock the one there now
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode(), 0)
    except OSError:  # a full disk: fail here, as the run's first write would
        os.close(fd)
        raise
    return fd


def read_holder(fd, tries=5):
    """'process 1234 on host h since 12:00:03', from a held lock file (its holder may be writing it)."""
    for _ in range(tries):
        try:
            holder = json.loads(os.pread(fd, 4096, 0))
            return f"process {holder['pid']} on host {holder['host']} since {clock(holder['since'])}"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.02)
    return "another process"


def clock(seconds):
    """A time of day, with the date when it is not today."""
    then = time.localtime(seconds)
    same_day = time.strftime("%Y%m%d", then) == time.strftime("%Y%m%d")
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", then)
