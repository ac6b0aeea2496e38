"""Fetching dataset files from public mirrors: several in turn, with retries.

urllib3 does the retrying (connection errors, 5xx answers, with backoff) and
refuses a body shorter than its Content-Length; what arrives is written to a
temporary file, verified against the dataset's checksum and only then renamed
into place, so a half-finished download is never taken for a dataset.
"""

import hashlib
import os

import urllib3
from urllib3.util import Retry, Timeout

from mnistlab.data import idx
from mnistlab.errors import DataError
from mnistlab.storage.files import atomic_path

RETRY = Retry(
    total=3,
    connect=3,
    read=2,
    status=3,
    backoff_factor=0.2,
    status_forcelist=(429, 500, 502, 503, 504),
    raise_on_status=True,
)
TIMEOUT = Timeout(connect=10.0, read=30.0)
CHUNK = 1 << 16


def mirrors_from_env(default):
    """MNISTLAB_MIRRORS (comma-separated base URLs) replaces the built-in list."""
    env = os.environ.get("MNISTLAB_MIRRORS")
    return tuple(u.strip() for u in env.split(",") if u.strip()) if env else tuple(default)


def fetch(http, url, dest, expected_md5, retries=RETRY, timeout=TIMEOUT):
    """Download `url` to `dest` atomically, verifying the uncompressed MD5."""
    with atomic_path(dest) as tmp:
        resp = http.request("GET", url, preload_content=False, retries=retries, timeout=timeout)
        try:
            if resp.status != 200:
                raise DataError(f"HTTP {resp.status}")
            with open(tmp, "wb") as f:
                for chunk in resp.stream(CHUNK):
                    f.write(chunk)
        finally:
            resp.release_conn()
        got = hashlib.md5(idx.read_bytes(tmp)).hexdigest()
        if got != expected_md5:
            raise DataError(f"checksum mismatch (MD5 {got}, expected {expected_md5})")


def download(spec, folder, mirrors=None, retries=RETRY, timeout=TIMEOUT):
    """Put the four files of dataset `spec` into `folder`, trying each mirror in turn."""
    os.makedirs(folder, exist_ok=True)
    mirrors = mirrors_from_env(spec.mirrors) if mirrors is None else tuple(mirrors)
    http = urllib3.PoolManager()
    for stem, md5 in spec.md5.items():
        dest = os.path.join(folder, stem + ".gz")
        if os.path.exists(dest):
            continue
        errors = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + stem + ".gz"
            try:
                fetch(http, url, dest, md5, retries=retries, timeout=timeout)
                break
            except (urllib3.exceptions.HTTPError, OSError, DataError) as e:
                errors.append(f"{url}: {short_reason(e)}")
        else:
            raise DataError(f"could not download {stem}.gz for {spec.name} from any mirror (" + "; ".join(errors) + ")")


def short_reason(e):
    """urllib3 nests the real cause inside MaxRetryError; show that cause."""
    reason = getattr(e, "reason", None) or e
    return str(reason).split(": ", 1)[-1] if isinstance(reason, Exception) else str(reason)
