"""after.jobs: finding jobs in the jobs folder without ever importing anything else."""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from after.jobs import (
    BUILTIN,
    JobError,
    JobInfo,
    JobRegistry,
    TaskContext,
    job,
    run_job,
    to_result,
)

ROOT = Path(__file__).resolve().parents[2]
DATE = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture
def tree(tmp_path):
    """tmp/jobs (the jobs folder) and tmp/outside (a canary that must never be imported)."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    canary = f"canary_{os.getpid()}_{id(tmp_path)}"
    write(outside, f"{canary}.py", f"import os\nos.environ['{canary.upper()}'] = 'imported'\n"
                                   f"def {canary}(task):\n    return 'escaped'\n")
    write(folder, "greet.py",
          '"""Greetings."""\n\n'
          'CALLS = []\n\n'
          'def greet(task, name, punctuation="!"):\n'
          '    """Say hello.\n\n    More text.\n    """\n'
          '    CALLS.append(name)\n'
          '    return f"hello {name}{punctuation}"\n')
    write(folder, "adder.py", "async def adder(task, a, b=10):\n"
                              "    '''Add, asynchronously.'''\n"
                              "    import asyncio\n"
                              "    await asyncio.sleep(0)\n"
                              "    return a + b\n")
    write(folder, "broken.py", "def broken(task:\n    pass\n")
    write(folder, "empty.py", "VALUE = 1\n")
    write(folder, "multi.py", "from after.jobs import job\n\n"
                              "@job\n"
                              "def decorated(task):\n"
                              "    '''Registered under its own name.'''\n"
                              "    return 'decorated'\n\n"
                              "@job('renamed')\n"
                              "def some_function(task, x):\n"
                              "    '''Registered under another name.'''\n"
                              "    return x * 2\n")
    write(folder, "http.py", "def http(task):\n    '''Tries to shadow the built-in.'''\n"
                             "    return 'shadow'\n")
    (folder / "escape.py").symlink_to(outside / f"{canary}.py")
    (folder / "inside_link.py").symlink_to(folder / "greet.py")
    yield {"folder": folder, "outside": outside, "canary": canary}
    os.environ.pop(canary.upper(), None)
    for name in list(sys.modules):
        if name.startswith("after_jobs.") or name == canary:
            del sys.modules[name]


def task_for(name, arguments=None, attempt=1, **extra):
    doc = {"_id": f"task-{name}", "worker": "w", "date": "2026-12-01T09:00:00Z",
           "job": {"name": name, "arguments": arguments}, **extra}
    return TaskContext(doc, DATE, attempt)


def test_resolve_function_of_module_with_the_same_name(tree):
    registry = JobRegistry(tree["folder"])
    func = registry.resolve("greet")
    assert func.__name__ == "greet"
    assert func.__module__ == "after_jobs.greet"
    assert run_job(func, task_for("greet"), ["Ada"]) == "hello Ada!"


def test_modules_are_cached_until_reload(tree):
    registry = JobRegistry(tree["folder"])
    first = registry.resolve("greet")
    assert registry.resolve("greet") is first
    write(tree["folder"], "greet.py", "def greet(task):\n    return 'v2'\n")
    assert registry.resolve("greet") is first
    registry.reload()
    second = registry.resolve("greet")
    assert second is not first
    assert second(None) == "v2"


@pytest.mark.parametrize(("name", "message"), [
    ("os.system", "job.name: 'os.system' is not a job name (letters, digits and _ only)"),
    ("../outside/x", "job.name: '../outside/x' is not a job name (letters, digits and _ only)"),
    ("a.b", "job.name: 'a.b' is not a job name (letters, digits and _ only)"),
    ("__import__", "job.name: '__import__' is not a job name (names starting with __ are "
                   "reserved)"),
    ("__init__", "job.name: '__init__' is not a job name (names starting with __ are "
                 "reserved)"),
    ("", "job.name: '' is not a job name (letters, digits and _ only)"),
    ("1abc", "job.name: '1abc' is not a job name (letters, digits and _ only)"),
    ("greet\n", "job.name: 'greet\\n' is not a job name (letters, digits and _ only)"),
    ("gr\u00e9et", "job.name: 'gr\u00e9et' is not a job name (letters, digits and _ only)"),
    ("/etc/passwd", "job.name: '/etc/passwd' is not a job name (letters, digits and _ only)"),
    ("a" * 101, "is not a job name (longer than 100 characters)"),
    (None, "job.name: expected a string, got NoneType"),
    (42, "job.name: expected a string, got int"),
    (["greet"], "job.name: expected a string, got list"),
    ({"name": "greet"}, "job.name: expected a string, got dict"),
])
def test_refused_names_import_nothing(tree, name, message):
    registry = JobRegistry(tree["folder"])
    before = set(sys.modules)
    with pytest.raises(JobError) as info:
        registry.resolve(name)
    assert message in str(info.value)
    assert set(sys.modules) == before
    assert tree["canary"] not in sys.modules
    assert tree["canary"].upper() not in os.environ


def test_canary_name_itself_is_not_found_in_the_folder(tree):
    registry = JobRegistry(tree["folder"])
    before = set(sys.modules)
    with pytest.raises(JobError) as info:
        registry.resolve(tree["canary"])
    assert str(info.value) == (
        f"job {tree['canary']!r} not found in jobs folder {tree['folder'].resolve()} "
        f"(no {tree['canary']}.py)"
    )
    assert tree["canary"].upper() not in os.environ
    assert not {m for m in set(sys.modules) - before if not m.startswith("after_jobs.")}


def test_symlink_escaping_the_folder_is_refused(tree):
    registry = JobRegistry(tree["folder"])
    with pytest.raises(JobError) as info:
        registry.resolve("escape")
    assert str(info.value) == (
        f"{tree['folder'] / 'escape.py'} resolves outside the jobs folder "
        f"{tree['folder'].resolve()}; refused"
    )
    assert tree["canary"].upper() not in os.environ
    assert "after_jobs.escape" not in sys.modules


def test_symlink_inside_the_folder_is_allowed_but_needs_its_own_function(tree):
    registry = JobRegistry(tree["folder"])
    with pytest.raises(JobError) as info:
        registry.resolve("inside_link")
    assert str(info.value) == f"{tree['folder'] / 'inside_link.py'} defines no function " \
                              "'inside_link'"


def test_missing_module(tree):
    registry = JobRegistry(tree["folder"])
    with pytest.raises(JobError) as info:
        registry.resolve("nope")
    assert str(info.value) == (
        f"job 'nope' not found in jobs folder {tree['folder'].resolve()} (no nope.py)"
    )


def test_module_without_the_function(tree):
    registry = JobRegistry(tree["folder"])
    with pytest.raises(JobError) as info:
        registry.resolve("empty")
    assert str(info.value) == f"{tree['folder'] / 'empty.py'} defines no function 'empty'"


def test_module_that_fails_to_import(tree):
    registry = JobRegistry(tree["folder"])
    with pytest.raises(JobError) as info:
        registry.resolve("broken")
    message = str(info.value)
    assert message.startswith(f"{tree['folder'] / 'broken.py'} failed to import: SyntaxError: ")
    assert "after_jobs.broken" not in sys.modules
    # fixing the file is enough: failures are not cached
    write(tree["folder"], "broken.py", "def broken(task):\n    return 'fixed'\n")
    assert registry.resolve("broken")(None) == "fixed"


def test_import_error_message_is_redacted(tree):
    write(tree["folder"], "leaky.py",
          "raise RuntimeError('cannot reach http://admin:s3cret@db:5984/')\n")
    with pytest.raises(JobError) as info:
        JobRegistry(tree["folder"]).resolve("leaky")
    assert str(info.value).endswith(
        "leaky.py failed to import: RuntimeError: cannot reach http://admin:***@db:5984/")


def test_module_calling_sys_exit_does_not_stop_the_worker(tree):
    write(tree["folder"], "quitter.py", "import sys\nsys.exit(3)\n")
    with pytest.raises(JobError) as info:
        JobRegistry(tree["folder"]).resolve("quitter")
    assert str(info.value).endswith("quitter.py failed to import: SystemExit: 3")


def test_decorated_jobs_in_the_folder(tree):
    registry = JobRegistry(tree["folder"])
    assert run_job(registry.resolve("renamed"), task_for("renamed"), {"x": 21}) == 42
    assert registry.resolve("decorated")(None) == "decorated"
    # folder registrations stay in that folder's registry
    with pytest.raises(JobError):
        JobRegistry(tree["outside"]).resolve("renamed")


def test_builtins_win_over_the_folder(tree):
    registry = JobRegistry(tree["folder"])
    func = registry.resolve("http")
    assert func.__module__ == "after.builtin_jobs"
    assert "after_jobs.http" not in sys.modules


def test_list(tree):
    folder = tree["folder"]
    infos = JobRegistry(folder).list()
    by_key = {(i.name, i.source): i for i in infos}
    assert by_key[("greet", str(folder / "greet.py"))] == JobInfo(
        "greet", str(folder / "greet.py"), "greet(task, name, punctuation='!')", "Say hello.")
    assert by_key[("adder", str(folder / "adder.py"))] == JobInfo(
        "adder", str(folder / "adder.py"), "adder(task, a, b=10)", "Add, asynchronously.")
    assert by_key[("renamed", str(folder / "multi.py"))] == JobInfo(
        "renamed", str(folder / "multi.py"), "renamed(task, x)", "Registered under another name.")
    assert by_key[("decorated", str(folder / "multi.py"))].doc == "Registered under its own name."
    assert by_key[("http", BUILTIN)].signature.startswith("http(task, url, method='GET'")
    assert by_key[("http", BUILTIN)].error is None
    assert by_key[("webhook", BUILTIN)].source == BUILTIN
    shadowed = by_key[("http", str(folder / "http.py"))]
    assert shadowed.error == "ignored: the built-in job 'http' takes precedence"
    broken = by_key[("broken", str(folder / "broken.py"))]
    assert broken.error.startswith(f"{folder / 'broken.py'} failed to import: SyntaxError")
    escape = by_key[("escape", str(folder / "escape.py"))]
    assert escape.error.endswith("; refused")
    assert tree["canary"].upper() not in os.environ
    names = [i.name for i in infos]
    assert names == sorted(names)
    assert "empty" not in names  # a helper module without a job is not a job
    assert "inside_link" not in names


def test_list_of_a_missing_folder_has_only_builtins(tmp_path):
    infos = JobRegistry(tmp_path / "missing").list()
    assert [(i.name, i.source) for i in infos] == [("http", BUILTIN), ("webhook", BUILTIN)]


def test_project_example_jobs():
    registry = JobRegistry(ROOT / "jobs")
    infos = {i.name: i for i in registry.list() if i.source != BUILTIN}
    assert sorted(infos) == ["fail", "hello", "history", "noop", "record", "record_slowly",
                             "sleep", "stamp", "start_replication", "wait"]
    assert all(i.doc and i.error is None for i in infos.values())
    task = task_for("start_replication", [2, 3, "test"])
    result = run_job(registry.resolve("start_replication"), task, [2, 3, "test"])
    assert result == {"source": 2, "target": 3, "label": "test"}
    assert run_job(registry.resolve("hello"), task, None) == "Hello, world!"
    assert run_job(registry.resolve("noop"), task, [1, 2]) is None
    with pytest.raises(RuntimeError, match="^boom$"):
        run_job(registry.resolve("fail"), task, {"message": "boom"})


def test_record_job_appends_one_line_per_run(tmp_path):
    registry = JobRegistry(ROOT / "jobs")
    out = tmp_path / "runs.jsonl"
    record = registry.resolve("record")
    run_job(record, task_for("record", attempt=1), [str(out), "a", 1])
    run_job(record, task_for("record", attempt=2), [str(out)])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["date"], r["attempt"], r["args"], r["pid"]) for r in lines] == [
        ("task-record", "2026-12-01T09:00:00+00:00", 1, ["a", 1], os.getpid()),
        ("task-record", "2026-12-01T09:00:00+00:00", 2, [], os.getpid()),
    ]
    assert all(datetime.fromisoformat(r["at"]).tzinfo is not None for r in lines)


def test_history_job_appends_a_start_and_an_end_line_per_run(tmp_path):
    registry = JobRegistry(ROOT / "jobs")
    out = tmp_path / "history.jsonl"
    job = registry.resolve("history")
    ran = TaskContext({"_id": "t", "worker": "w", "date": "2026-12-01T09:00:00Z",
                       "job": {"name": "history"},
                       "after": {"owner": "w@host:1:abc", "run": 3}}, DATE, 2, "occ-1")
    first = run_job(job, ran, [str(out)])
    second = run_job(job, ran, [str(out), 0.01])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["ev"], r["run"]) for r in lines] == [
        ("start", first), ("end", first), ("start", second), ("end", second)]
    assert first != second
    assert {(r["task"], r["occurrence"], r["attempt"], r["number"], r["process"], r["pid"],
             r["child"]) for r in lines} == {("t", "occ-1", 2, 3, "w@host:1:abc", os.getpid(),
                                              None)}
    start, end = lines[2], lines[3]
    assert start["start"] == end["start"] and "end" not in start
    assert (datetime.fromisoformat(end["end"]) - datetime.fromisoformat(end["start"])
            ).total_seconds() >= 0.01


def test_async_job(tree):
    registry = JobRegistry(tree["folder"])
    assert run_job(registry.resolve("adder"), task_for("adder"), [1, 2]) == 3
    assert run_job(registry.resolve("adder"), task_for("adder"), {"a": 5}) == 15


def test_list_dict_and_no_arguments(tree):
    registry = JobRegistry(tree["folder"])
    greet = registry.resolve("greet")
    task = task_for("greet")
    assert run_job(greet, task, ["Ada", "?"]) == "hello Ada?"
    assert run_job(greet, task, ("Ada",)) == "hello Ada!"
    assert run_job(greet, task, {"name": "Bob", "punctuation": "."}) == "hello Bob."
    calls = []
    assert run_job(lambda t: calls.append(t) or "ok", task, None) == "ok"
    assert calls == [task]


@pytest.mark.parametrize(("arguments", "message"), [
    ([], "job 'greet' arguments do not match greet(task, name, punctuation='!'): "
         "missing a required argument: 'name'"),
    (["a", "b", "c"], "job 'greet' arguments do not match greet(task, name, punctuation='!'): "
                      "too many positional arguments"),
    ({"nme": "x"}, "job 'greet' arguments do not match greet(task, name, punctuation='!'): "
                   "missing a required argument: 'name'"),
    ({"name": "x", "colour": "red"}, "job 'greet' arguments do not match "
                                     "greet(task, name, punctuation='!'): "
                                     "got an unexpected keyword argument 'colour'"),
    ("Ada", "job.arguments: expected a list, an object or nothing, got str"),
    (3, "job.arguments: expected a list, an object or nothing, got int"),
])
def test_bad_arguments(tree, arguments, message):
    registry = JobRegistry(tree["folder"])
    greet = registry.resolve("greet")
    with pytest.raises(JobError) as info:
        run_job(greet, task_for("greet"), arguments)
    assert str(info.value) == message
    assert sys.modules["after_jobs.greet"].CALLS == []  # the job was never called


def test_type_error_inside_a_job_is_not_an_argument_error():
    def clumsy(task, x):
        return x + "1"

    with pytest.raises(TypeError) as info:
        run_job(clumsy, task_for("clumsy"), [1])
    assert not isinstance(info.value, JobError)


def test_registry_is_thread_safe(tree):
    write(tree["folder"], "counted.py",
          "import time, os\n"
          "LOADS = int(os.environ.get('AFTER_TEST_LOADS', '0')) + 1\n"
          "os.environ['AFTER_TEST_LOADS'] = str(LOADS)\n"
          "time.sleep(0.05)\n"
          "def counted(task):\n    return LOADS\n")
    os.environ.pop("AFTER_TEST_LOADS", None)
    registry = JobRegistry(tree["folder"])
    results, barrier = [], threading.Barrier(8)

    def worker():
        barrier.wait()
        results.append(registry.resolve("counted"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len({id(f) for f in results}) == 1
    assert os.environ.pop("AFTER_TEST_LOADS") == "1"


def test_task_context_is_read_only_and_a_copy():
    doc = {"_id": "t1", "worker": "billing", "job": {"name": "greet", "arguments": ["Ada"]},
           "custom": {"nested": [1, 2]}}
    task = TaskContext(doc, DATE, 2)
    assert (task.id, task.worker, task.date, task.job, task.attempt) == (
        "t1", "billing", DATE, "greet", 2)
    assert task.arguments == ["Ada"]
    assert task.doc["custom"] == {"nested": [1, 2]}
    with pytest.raises(AttributeError):
        task.id = "other"
    with pytest.raises(TypeError):
        task.doc["worker"] = "other"
    task.doc["custom"]["nested"].append(3)  # mutating the copy...
    assert doc["custom"]["nested"] == [1, 2]  # ...never reaches the worker's document
    assert repr(task) == "TaskContext(id='t1', job='greet', date=2026-12-01T09:00:00+00:00, " \
                         "attempt=2)"


def test_a_task_contexts_cancel_event_is_made_once_when_first_asked_for():
    """A burst's contexts are made seconds ahead, thousands at once: the event (1.2 kB) is
    made when the run begins and asks for it, once, whichever thread asks first."""
    task = TaskContext({"_id": "t1", "job": {"name": "greet"}}, DATE, 1)
    assert task._canceled is None
    seen, barrier = [], threading.Barrier(8)

    def ask():
        barrier.wait()
        seen.append(task.canceled)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(event) for event in seen}) == 1 and seen[0] is task.canceled
    assert not task.canceled.is_set()
    task.canceled.set()  # the worker's cancel reaches the job's view of it
    assert task.canceled.is_set()
    with pytest.raises(AttributeError):
        task.canceled = threading.Event()


def test_task_context_of_a_document_without_job():
    task = TaskContext({"_id": "x"}, DATE, 1)
    assert (task.job, task.arguments, task.worker) == (None, None, None)


def test_job_decorator_refuses_bad_names_and_duplicates():
    with pytest.raises(ValueError, match="is not a job name"):
        job("os.system")
    with pytest.raises(ValueError, match="is not a job name"):
        job("a b")(lambda task: None)
    JobRegistry(ROOT / "jobs").resolve("http")  # make sure built-ins are registered
    with pytest.raises(ValueError, match="job 'http' is already registered by "
                                         "after.builtin_jobs.http"):

        @job("http")
        def http(task):
            return None


def test_to_result_keeps_small_json_values():
    assert to_result({"a": [1, 2.5, None, True], "b": "x"}) == {"a": [1, 2.5, None, True],
                                                               "b": "x"}
    assert to_result((1, 2)) == [1, 2]
    assert to_result(None) is None
    assert to_result("x" * 100, limit=102) == "x" * 100  # 102 characters of JSON


def test_to_result_truncates_large_values():
    assert to_result("x" * 100, limit=101) == {
        "truncated": True, "repr": '"' + "x" * 100, "length": 102}
    big = list(range(5000))
    result = to_result(big)
    assert result["truncated"] is True
    assert len(result["repr"]) == 10_000
    assert result["repr"].startswith("[0, 1, 2, ")
    assert result["length"] == len(json.dumps(big))


def test_to_result_of_non_json_values_uses_repr():
    assert to_result({1, 2}) == {"truncated": False, "repr": "{1, 2}", "length": 6}
    assert to_result(DATE) == {
        "truncated": False,
        "repr": "datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.timezone.utc)",
        "length": 66,
    }
    assert to_result(float("nan")) == {"truncated": False, "repr": "nan", "length": 3}
    assert to_result(object(), limit=8)["repr"] == "<object "

    class Broken:
        def __repr__(self):
            raise RuntimeError("no")

    assert to_result(Broken())["repr"] == "<Broken object, repr failed: RuntimeError>"


def test_to_result_redacts_secrets():
    assert to_result({"token": "abc", "url": "https://u:p@h/"}) == {
        "token": "***", "url": "https://u:***@h/"}
