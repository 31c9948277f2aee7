"""Every command of the README, run in order as a newcomer runs them after ``make run``:
the embedded server it starts (on a free port, its data and the worker's files in a
temporary folder), the first task, by the command line and by ``curl``, the first job, and
the Python example; then ``make stop``. ``make test`` itself is not run from inside the
suite: ``make -n test`` shows that it installs everything and runs pytest."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from after.couch.server import free_port
from after.process import pid_files

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.rst"


def literal_blocks() -> list[str]:
    """The README's literal blocks (after a paragraph ending in ``::``), dedented."""
    lines = README.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].rstrip().endswith("::") and not lines[i].lstrip().startswith(".."):
            i += 1
            body = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
                body.append(lines[i][4:])
                i += 1
            blocks.append("\n".join(body).strip("\n"))
        else:
            i += 1
    return blocks


def sh(script: str, env: dict, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", "-ec", script], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, (script, done.stdout, done.stderr)
    return done


def wait_for_text(script: str, pattern: str, env: dict, cwd: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = sh(script, env, cwd).stdout
        if re.search(pattern, out) or time.monotonic() > deadline:
            assert re.search(pattern, out), out
            return out
        time.sleep(0.3)


def test_every_command_of_the_readme(tmp_path):
    blocks = literal_blocks()
    quick, first_task, curl, first_job, python = blocks
    assert quick.splitlines() == ["make run", "make test"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    shutil.copytree(ROOT / "jobs", tmp_path / "jobs")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFTER_")}
    env.update(AFTER_HOME=str(tmp_path / "var"), AFTER_JOBS=str(tmp_path / "jobs"),
               AFTER_COUCHDB_URL=url, PORT=str(port))
    try:
        # make run: what it installs is checked by test_install (make -n); here it runs
        ran = sh(f"make -C {ROOT} -o install-run run", env, tmp_path, timeout=180)
        assert re.search(r"status\s+done", ran.stdout), ran.stdout
        # (-B: as on a fresh clone, whatever this checkout installed already)
        tests = sh(f"make -n -B -C {ROOT} test", env, tmp_path)
        assert "-m pytest" in tests.stdout and "'.[test]'" in tests.stdout
        printed = sh(first_task, env, tmp_path)  # after add ... --id first; after show first
        assert printed.stdout.startswith("first\n")
        wait_for_text(". .venv/bin/activate; after show first", r"status\s+done", env,
                      tmp_path)
        assert '"Hello, Ada!"' in sh(". .venv/bin/activate; after show first", env,
                                     tmp_path).stdout
        sh(curl.replace("http://127.0.0.1:5984", url), env, tmp_path)
        wait_for_text(". .venv/bin/activate; after show second", r"status\s+done", env,
                      tmp_path)
        # the same shell as the first block, where .venv/bin/activate was sourced
        job = sh(f". .venv/bin/activate\n{first_job}", env, tmp_path)  # greet.py, jobs, add
        assert re.search(r"^greet\s+jobs/greet\.py\s+greet\(task, name, punctuation='!'\)\s+"
                         r"Greet someone\.$", job.stdout, re.M), job.stdout
        assert job.stdout.rstrip().endswith("third")
        done = wait_for_text(". .venv/bin/activate; after show third", r"status\s+done", env,
                             tmp_path)
        assert '"Hello, Linus?"' in done
        script = subprocess.run([sys.executable, "-c", python], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert script.stdout == "Hello, Ada!\n", script.stderr
    finally:
        stopped = subprocess.run(["make", "-C", str(ROOT), "stop"], env=env, cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120)
        for pidfile in pid_files(tmp_path / "var"):  # whatever make stop left
            if pidfile.running and pidfile.pid:
                os.kill(pidfile.pid, 9)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped demo" in stopped.stdout and "embedded server stopped" in stopped.stdout
