"""Jobs that explain themselves, from the command line: ``after jobs`` and ``after start``
name each module that defines no job and why; a worker starts with only the built-in jobs
when there is no jobs folder (and says so); ``--jobs-module`` runs the jobs of an installed
package whose modules share code; ``--jobs`` and ``--jobs-module`` work after the command."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path

from after.process import pid_files

from .conftest import one_line_error, wait_for

BILLING = '''
"""A new user's first jobs module: two functions, neither named billing."""


def generate_billing(task, customer):
    return f"billed {customer}"


def tick(task):
    return "tick"
'''


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_jobs_names_a_module_that_defines_no_job(cli, tmp_path):
    folder = tmp_path / "myjobs"
    write(folder / "billing.py", BILLING)
    write(folder / "greet.py", "def greet(task):\n    return 'hi'\n")
    done = cli.run("jobs", "--jobs", str(folder))  # --jobs after the command
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]][:3] == ["greet", "http", "webhook"]
    assert lines[-1] == (  # the command runs in tmp_path: paths are shown relative to it
        "note: myjobs/billing.py: defines no job: a job is the function named like its "
        "module (billing) or a function decorated with @after.jobs.job; it defines "
        "generate_billing(), tick() (rename the module or the function, or decorate them "
        "with @job)")
    listed = cli.run("jobs", "--json", "--jobs", str(folder))
    assert [i["name"] for i in json.loads(listed.stdout)] == ["greet", "http", "webhook"]
    assert listed.stderr.startswith(f"note: {folder / 'billing.py'}: defines no job")


def test_start_names_a_module_that_defines_no_job(cli, tasks, tmp_path):
    folder = tmp_path / "myjobs"
    write(folder / "billing.py", BILLING)
    write(folder / "greet.py", "def greet(task):\n    return 'hi'\n")
    worker = cli.spawn("start", "billing", "--poll", "1", "--jobs", str(folder))
    wait_for(lambda: any(f.running for f in pid_files(cli.home, "billing")), what="start")
    tasks.put({"_id": "g", "worker": "billing", "date": "2026-01-01T00:00:00Z",
               "status": "waiting", "job": {"name": "greet", "arguments": []}})
    wait_for(lambda: tasks.get("g")["status"] == "done", what="the other module's job")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    notice = (f"{folder / 'billing.py'}: defines no job: a job is the function named like "
              "its module (billing) or a function decorated with @after.jobs.job; it defines "
              "generate_billing(), tick() (rename the module or the function, or decorate "
              "them with @job)")
    logged = (cli.home / "billing.log").read_text()
    assert logged.count(notice) == 1
    assert "WARNING" in next(line for line in logged.splitlines() if notice in line)
    assert "greet.py" not in logged  # a module with its job is not named


def test_a_worker_without_a_jobs_folder_runs_the_built_in_jobs_and_says_so(cli, tasks,
                                                                          tmp_path):
    nowhere = tmp_path / "no-jobs-here"
    worker = cli.spawn("start", "builtins", "--poll", "1", AFTER_JOBS=str(nowhere))
    wait_for(lambda: any(f.running for f in pid_files(cli.home, "builtins")), what="start")
    tasks.put({"_id": "probe", "worker": "builtins", "date": "2026-01-01T00:00:00Z",
               "status": "waiting", "job": {"name": "http", "arguments": {
                   "url": f"{cli.url.rstrip('/')}/", "expected_status": [200, 401]}}})
    wait_for(lambda: tasks.get("probe")["status"] in ("done", "error"), what="the http run")
    assert tasks.get("probe")["status"] == "done", tasks.get("probe")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    logged = (cli.home / "builtins.log").read_text()
    assert f"{nowhere}: no jobs folder here: only the built-in jobs (http, webhook) can run" \
        in logged
    assert logged.count("no jobs folder here") == 1
    printed = (cli.home / "spawn-0.out").read_text()
    assert printed.count("no jobs folder here") == 1  # once on stderr, once in the file


def test_jobs_of_an_installed_package_that_share_code(cli, tasks, tmp_path):
    site = tmp_path / "site"
    write(site / "acme" / "__init__.py", "")
    write(site / "acme" / "jobs" / "__init__.py", "")
    write(site / "acme" / "money.py", "def cents(amount):\n    return int(amount * 100)\n")
    write(site / "acme" / "jobs" / "invoice.py", '''
        """Invoices, with code shared with the rest of the package."""
        from acme.money import cents
        from .shared import prefix


        def invoice(task, amount):
            """Invoice an amount."""
            return prefix() + str(cents(amount))
    ''')
    write(site / "acme" / "jobs" / "shared.py", "def prefix():\n    return 'INV-'\n")
    env = {"PYTHONPATH": str(site), "AFTER_JOBS": str(tmp_path / "none")}
    listed = cli.run("--jobs-module", "acme.jobs", "jobs", **env)
    assert listed.returncode == 0, listed.stderr
    invoice = next(line for line in listed.stdout.splitlines() if line.startswith("invoice"))
    assert "acme/jobs/invoice.py" in invoice and "Invoice an amount." in invoice
    assert "shared.py: defines no job" in listed.stdout
    added = cli.run("add", "invoice", "12.5", "-w", "acme", "--id", "inv",
                    AFTER_JOBS_MODULE="acme.jobs", **env)  # the job is checked, and found
    assert added.returncode == 0, added.stderr
    worker = cli.spawn("start", "acme", "--poll", "1", "--jobs-module", "acme.jobs", **env)
    wait_for(lambda: tasks.get("inv")["status"] in ("done", "error"), what="the run")
    assert tasks.get("inv")["after"]["last_run"]["result"] == "INV-1250"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_a_jobs_module_that_cannot_be_imported_stops_the_start(cli):
    done = cli.run("start", "nomod", "--jobs-module", "no_such_pkg_here.jobs")
    line = one_line_error(done)
    assert line.startswith("after: error: jobs module no_such_pkg_here.jobs failed to import: "
                           "ModuleNotFoundError")
    assert done.returncode == 1
    bad = one_line_error(cli.run("jobs", "--jobs-module", "../x"))
    assert "'../x' is not a module name" in bad
    assert not os.path.exists(cli.home / "nomod.log")
