"""``armctl`` run in process, as its console script runs it: exit code, stdout and stderr.

The CLI tests call commands this way (click's ``CliRunner`` isolation around
``reconciler.cli.main.run``, the console script's own entry point, so error handling and exit
codes are the real ones) instead of a process per command: imports are paid once per test session,
not once per command. A few smoke tests (``tests/cli/test_smoke.py``) still run the real
``armctl`` process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from click import testing

from reconciler.cli import main

__all__ = ["Result", "invoke"]


@dataclasses.dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def invoke(
    args: tuple[str, ...] | list[str],
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Result:
    """Run ``armctl args`` with ``env`` set (over the test process's environment), in ``cwd``."""
    runner = testing.CliRunner()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    code = 0
    try:
        with contextlib.chdir(cwd or os.getcwd()), runner.isolation(input=stdin, env=dict(env or {})) as (out, err, _):
            try:
                main.run(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    finally:
        # ``armctl`` points the root logger at the stderr it was given: put the test's back.
        root.handlers[:] = handlers
        root.setLevel(level)
    return Result(code, stdout, stderr)
