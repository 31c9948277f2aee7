"""Jobs that explain themselves: a module that defines no job is named with the reason, a
missing jobs folder leaves the built-in jobs, and jobs come from installed modules that
share code (``--jobs-module``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from after import jobs
from after.jobmodules import no_job_reason, own_functions
from after.jobs import BUILTIN, JobError, JobRegistry, TaskContext, run_job

DATE = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def context(name: str) -> TaskContext:
    doc = {"_id": f"t-{name}", "worker": "w", "date": "2026-12-01T09:00:00Z",
           "job": {"name": name, "arguments": []}}
    return TaskContext(doc, DATE, 1)


@pytest.fixture
def folder(tmp_path):
    jobs = tmp_path / "jobs"
    write(jobs / "billing.py", '''
        """Billing: two functions, neither named like the file."""
        import json

        def generate_billing(task):
            return "billed"

        def tick(task):
            return "tick"
    ''')
    write(jobs / "constants.py", "RATE = 3\n")
    write(jobs / "_helpers.py", "def helper():\n    return 1\n")
    write(jobs / "hello2.py", "def hello2(task):\n    return 'hi'\n")
    write(jobs / "tagged.py", "from after.jobs import job\n\n@job('tag_me')\n"
                              "def some(task):\n    return 'tagged'\n")
    yield jobs
    for name in list(sys.modules):
        if name.startswith("after_jobs."):
            del sys.modules[name]


@pytest.fixture
def package(tmp_path, monkeypatch):
    """An installed package ``acme_jobs_<n>`` whose job modules share a helper module."""
    name = f"acme_jobs_{abs(hash(tmp_path)) % 10**8}"
    root = tmp_path / "site"
    write(root / name / "__init__.py", '"""Acme\'s jobs."""\n')
    write(root / name / "_shared.py", "def rate():\n    return 7\n")
    write(root / name / "invoice.py", f'''
        """Invoices."""
        from ._shared import rate
        from {name}.common import currency

        def invoice(task, amount):
            """Invoice an amount."""
            return f"{{amount * rate()}} {{currency()}}"
    ''')
    write(root / name / "common.py", "def currency():\n    return 'EUR'\n")
    write(root / name / "decorated.py", '''
        from after.jobs import job

        @job("acme_decorated")
        def anything(task):
            return "decorated"
    ''')
    write(root / name / "broken.py", "raise RuntimeError('cannot reach http://admin:hunter2@db:5984')\n")
    write(root / f"{name}_single.py", '''
        def helper_only(task):
            return 1
    ''')
    monkeypatch.syspath_prepend(str(root))
    yield name
    for loaded in list(sys.modules):
        if loaded.startswith(name):
            del sys.modules[loaded]
    with jobs._registered_lock:  # its @job registrations are process-wide: not for others
        for job_name, func in list(jobs._registered.items()):
            if func.__module__.startswith(name):
                del jobs._registered[job_name]


def test_a_module_that_defines_no_job_is_named_with_the_reason(folder):
    registry = JobRegistry(folder)
    notices = {Path(n.source).name: n.message for n in registry.notices()}
    assert notices["billing.py"] == (
        "defines no job: a job is the function named like its module (billing) or a "
        "function decorated with @after.jobs.job; it defines generate_billing(), tick() "
        "(rename the module or the function, or decorate them with @job)")
    assert notices["constants.py"].startswith("defines no job: it defines no function")
    assert set(notices) == {"billing.py", "constants.py"}  # _helpers.py is a helper
    names = {i.name for i in registry.list()}
    assert {"hello2", "tag_me"} <= names and "generate_billing" not in names


def test_a_missing_folder_leaves_the_built_in_jobs_and_says_so(tmp_path):
    registry = JobRegistry(tmp_path / "nowhere")
    [notice] = registry.notices()
    assert notice.source == str(tmp_path / "nowhere")
    assert notice.message.startswith("no jobs folder here: only the built-in jobs (http, "
                                     "webhook) can run")
    assert [i.source for i in registry.list()] == [BUILTIN, BUILTIN]
    assert registry.resolve("http").__name__ == "http"
    with pytest.raises(JobError, match="is not a built-in job and the jobs folder .* does "
                                       "not exist"):
        registry.resolve("billing")


def test_jobs_of_an_installed_package_share_code(tmp_path, package):
    registry = JobRegistry(tmp_path / "nowhere", [package])
    assert run_job(registry.resolve("invoice"), context("invoice"), [3]) == "21 EUR"
    assert run_job(registry.resolve("acme_decorated"), context("acme_decorated"), []) == \
        "decorated"
    listed = {i.name: i for i in registry.list()}
    assert listed["invoice"].source.endswith(f"{package}/invoice.py")
    assert listed["invoice"].doc == "Invoice an amount."
    assert "_shared" not in listed and "common" not in listed
    notices = {n.source.rpartition("/")[2] if "/" in n.source else n.source: n.message
               for n in registry.notices()}
    assert notices["common.py"].startswith("defines no job")  # a shared module is named: it
    assert "_shared.py" not in notices                          # would start with _ otherwise
    broken = notices[f"{package}.broken"]
    assert broken == "failed to import: RuntimeError: cannot reach http://admin:***@db:5984"
    assert "hunter2" not in broken
    with pytest.raises(JobError, match=f"nor in the jobs modules {package}"):
        registry.resolve("nothing_here")


def test_a_plain_module_gives_the_function_named_like_it(tmp_path, package):
    single = f"{package}_single"
    write(tmp_path / "site" / f"{package}_named.py", f"def {package}_named(task):\n"
                                                       "    return 'named'\n")
    registry = JobRegistry(tmp_path / "nowhere", [single, f"{package}_named"])
    assert run_job(registry.resolve(f"{package}_named"), context("x"), []) == "named"
    [notice] = [n for n in registry.notices() if n.source.endswith(f"{single}.py")]
    assert "it defines helper_only()" in notice.message


def test_a_missing_jobs_module_is_a_notice_naming_it(tmp_path):
    registry = JobRegistry(tmp_path, ["no_such_module_here.jobs"])
    [notice] = registry.notices()
    assert notice.source == "no_such_module_here.jobs"
    assert notice.message.startswith("failed to import: ModuleNotFoundError")


def test_a_document_never_imports_a_module_the_operator_did_not_name(tmp_path, package):
    registry = JobRegistry(tmp_path, [package])
    for name in ("os", "sys", "json", "_shared"):
        with pytest.raises(JobError):
            registry.resolve(name)
    assert f"{package}._shared" in sys.modules  # imported by invoice, as Python does
    with pytest.raises(ValueError, match="is not a module name"):
        JobRegistry(tmp_path, ["../escape"])


def test_an_isolated_run_finds_a_job_of_a_jobs_module(tmp_path, package):
    """The child process rebuilds the registry from its spec: folder and modules. (Run in
    a fresh interpreter: a fork server started earlier in this session has another
    sys.path.)"""
    registry = JobRegistry(tmp_path / "nowhere", [package])
    assert JobRegistry.of(registry.spec).modules == (package,)
    script = textwrap.dedent(f"""
        from datetime import UTC, datetime
        from after.worker import isolation
        from after.jobs import JobRegistry, TaskContext
        registry = JobRegistry({str(tmp_path / "nowhere")!r}, [{package!r}])
        doc = {{"_id": "t", "worker": "w", "date": "2026-12-01T09:00:00Z",
               "job": {{"name": "invoice", "arguments": [2]}}}}
        context = TaskContext(doc, datetime(2026, 12, 1, tzinfo=UTC), 1)
        reply = isolation.run(isolation.Child(), registry, registry.resolve("invoice"),
                              context, [2])
        print(reply.ok, reply.result, reply.error)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert done.stdout.strip() == "True 14 EUR None", done.stderr


def test_own_functions_leave_out_imported_and_private_ones():
    import after.jobmodules as module

    names = own_functions(module)
    assert "no_job_reason" in names and "import_module" not in names
    assert all(not n.startswith("_") for n in names)
    assert no_job_reason(module, "jobmodules").startswith("defines no job: a job is the "
                                                          "function named like its module")
