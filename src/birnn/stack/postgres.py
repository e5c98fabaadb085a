"""PostgreSQL, MLflow's backend store and the sweeps' study storage: a cluster made by
``initdb`` in the stack folder, listening on 127.0.0.1 only, password auth (scram-sha-256).

Under root it runs as ``nobody`` (PostgreSQL refuses root); a stack folder ``nobody`` cannot
enter is one :class:`StackError` line saying what to do. A pid file left by a killed server is
removed before the start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING

from birnn.stack.state import DATABASES, PG_USER_WHEN_ROOT, StackError, State, pg_bindir

if TYPE_CHECKING:
    from birnn.stack.core import Stack


def user_kw(stack: Stack) -> dict:
    """Run PostgreSQL as ``nobody`` when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return {}
    import pwd

    pw = pwd.getpwnam(PG_USER_WHEN_ROOT)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def check_reachable(stack: Stack) -> None:
    if os.geteuid() != 0:
        return
    for folder in [stack.root, *stack.root.parents]:
        if folder.exists() and not os.stat(folder).st_mode & 0o001:
            raise StackError(
                f"PostgreSQL runs as {PG_USER_WHEN_ROOT!r} under root and cannot enter "
                f"{folder}: put the stack folder elsewhere (--dir) or `chmod o+x {folder}`"
            )


def init(stack: Stack, st: State) -> None:
    kw = user_kw(stack)
    check_reachable(stack)
    # initdb wants an empty folder it owns; a half-made one from a failed init is redone.
    if stack.pgdata.exists():
        shutil.rmtree(stack.pgdata)
    stack.pgdata.mkdir(mode=0o700)
    pwfile = stack.pgdata.parent / ".pgpass-init"
    pwfile.unlink(missing_ok=True)
    # Private from creation: no moment when another user could read the password.
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(st.pg_password + "\n")
    if kw:
        os.chown(stack.pgdata, kw["user"], kw["group"])
        os.chown(pwfile, kw["user"], kw["group"])
    try:
        res = subprocess.run(
            [str(pg_bindir() / "initdb"), "-D", str(stack.pgdata), "-U", "birnn",
             f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-locale"],
            capture_output=True, text=True, **kw,
        )  # fmt: skip
    finally:
        pwfile.unlink(missing_ok=True)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()
        raise StackError(f"initdb failed: {tail[-1] if tail else res.returncode}")


def start(stack: Stack, st: State) -> None:
    if not (stack.pgdata / "PG_VERSION").is_file():
        init(stack, st)
    # A pid file left by a killed server would make postgres refuse to start.
    stale = stack.pgdata / "postmaster.pid"
    if stale.exists() and stack.pid("postgres") is None:
        stale.unlink()
    stack.spawn(
        "postgres",
        [str(pg_bindir() / "postgres"), "-D", str(stack.pgdata),
         "-p", str(st.ports.postgres), "-c", "listen_addresses=127.0.0.1",
         "-c", "unix_socket_directories=", "-c", "max_connections=100"],
        {},
        **user_kw(stack),
    )  # fmt: skip
    stack.wait("postgres", 60)
    ensure_database(stack, st)


def connect(stack: Stack, st: State, dbname: str):
    import psycopg2

    return psycopg2.connect(
        host="127.0.0.1",
        port=st.ports.postgres,
        user="birnn",
        password=st.pg_password,
        dbname=dbname,
        connect_timeout=2,
    )


def ready(stack: Stack, st: State) -> bool:
    import psycopg2

    try:
        connect(stack, st, "postgres").close()
    except psycopg2.OperationalError:
        return False
    return True


def ensure_database(stack: Stack, st: State) -> None:
    conn = connect(stack, st, "postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in DATABASES:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f"CREATE DATABASE {name}")
    finally:
        conn.close()
