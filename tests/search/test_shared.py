"""Two `mnistlab search` processes sharing one study through a real PostgreSQL server (--storage):
between them they reach the total, and no trial runs twice.

The test starts its own server (initdb, pg_ctl) in a temporary folder on a free loopback port; as
root it runs the server as `nobody` (PostgreSQL refuses to run as root). It skips, saying why, only
where no server can be started (no PostgreSQL binaries, no way to drop root, no database driver).
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
N = 2400
TOTAL = 6

pytestmark = pytest.mark.slow


def postgres_bin():
    found = shutil.which("pg_ctl")
    if found:
        return os.path.dirname(found)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(candidates[-1]) if candidates else None


@pytest.fixture
def postgres():
    """postgresql://postgres@127.0.0.1:PORT/postgres, served from a temporary folder."""
    pytest.importorskip("psycopg", reason="needs a PostgreSQL driver: pip install -e '.[test]' (psycopg[binary])")
    pytest.importorskip("sqlalchemy", reason="Optuna's RDB storage needs sqlalchemy: pip install -e '.[test]'")
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    as_user = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser: PostgreSQL refuses to run as root")
        as_user = [runuser, "-u", "nobody", "--"]
    folder = tempfile.mkdtemp(prefix="mnistlab-pg-")
    data = os.path.join(folder, "data")
    if as_user:
        os.chmod(folder, 0o700)
        shutil.chown(folder, "nobody", "nogroup" if _group_exists("nogroup") else "nobody")
    port = free_port()
    log = os.path.join(folder, "server.log")
    try:
        init = subprocess.run(
            as_user + [os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
            capture_output=True,
            text=True,
            cwd=folder,
        )
        if init.returncode:
            pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
        start = subprocess.run(
            as_user
            + [
                os.path.join(bindir, "pg_ctl"),
                "-D",
                data,
                "-l",
                log,
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ],
            capture_output=True,
            text=True,
            cwd=folder,
        )
        if start.returncode:
            pytest.skip(f"the PostgreSQL server did not start: {start.stderr.strip()[-300:]}")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            as_user + [os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
            cwd=folder,
        )
        shutil.rmtree(folder, ignore_errors=True)


def _group_exists(name):
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def command(out, url):
    from mnistlab.data.load import find

    return [
        sys.executable,
        "-m",
        "mnistlab",
        "search",
        "--strategy",
        "random",
        "--trials",
        str(TOTAL),
        "--limit",
        str(N),
        "--epochs",
        "2",
        "--data-dir",
        str(find("mnist")),
        "--grid",
        "lr=1e-4..1e-2:log",
        "--grid",
        "optimizer=Adam,Nadam",
        "--grid",
        "dropout=0.0..0.5",
        "--hidden",
        "64",
        "--no-refit",
        "--storage",
        url,
        "--out",
        str(out),
    ]


def test_two_processes_share_one_study(mnist, postgres, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    procs = [
        subprocess.Popen(
            command(tmp_path / f"machine{i}", postgres),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for i in range(2)
    ]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n----\n".join(o[:3000] for o in outputs)

    import optuna

    name = json.loads((tmp_path / "machine0" / "search.json").read_text())["study"]
    study = optuna.load_study(study_name=name, storage=postgres)
    real = [t for t in study.trials if not t.user_attrs.get("surplus")]
    assert len(real) == TOTAL and all(t.state.name in ("COMPLETE", "PRUNED") for t in real)  # exactly the total
    owners = [t.user_attrs["owner"] for t in real]
    assert len(set(owners)) == 2  # both took part
    ran = [int(re.search(r"\((\d+) trials run here", o).group(1)) for o in outputs]
    assert sum(ran) == TOTAL  # none ran twice
    for i in range(2):  # both wrote the whole table
        rows = json.loads((tmp_path / f"machine{i}" / "results.json").read_text())
        assert sorted(r["number"] for r in rows) == sorted(t.number for t in real)
