"""A throwaway PostgreSQL cluster on a free loopback port, stopped and started at will.

initdb and pg_ctl refuse to run as root, so as root they run as the `postgres` user.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.bridge_env import free_port


def available() -> bool:
    return shutil.which("initdb") is not None and shutil.which("pg_ctl") is not None


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class Cluster:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="caller-engine-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")

    def init(self) -> Cluster:
        subprocess.run(
            [
                *_as_postgres(),
                "initdb",
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        return self

    def _ctl(self, *args: str) -> list[str]:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        return [*_as_postgres(), "pg_ctl", "-D", str(self.data), "-o", options, *args]

    async def _run(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self._ctl(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctl {args[0]} failed: {(out + err).decode()}")

    async def start(self) -> None:
        await self._run("start", "-w", "-l", str(self.root / "server.log"))

    async def stop(self) -> None:
        """Like a crash of the database server for its clients: every connection drops."""
        await self._run("stop", "-w", "-m", "immediate")

    def remove(self) -> None:
        subprocess.run(
            [*_as_postgres(), "pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)
