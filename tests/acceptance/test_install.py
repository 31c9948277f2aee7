"""Two install paths. ``make run`` installs what running needs and nothing more, ``make
test`` everything (read from ``make -n``: the suite must not install anything itself); and a
wheel built here, installed with pip into a fresh environment, gives a working ``after``
and Client, ships ``py.typed``, and its ``after server`` says in one line how to get the
embedded server, or runs it (as docs/deploy.rst, "Installing with pip", says)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from after.couch.server import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def make_n(target: str, tmp_path: Path) -> str:
    """The commands ``make TARGET`` would run in a checkout with nothing installed yet."""
    done = subprocess.run(["make", "-n", "-C", str(ROOT), target,
                           f"VENV={tmp_path / 'venv'}", "-o", "node_modules/.installed"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


TEST_TOOLS = ("[test]", "install-browser", "install-faketime", "playwright", "apt-get")


def test_make_run_installs_only_what_running_needs(tmp_path):
    run = make_n("run", tmp_path)
    assert "pip install --quiet -e .\n" in run
    assert not [tool for tool in TEST_TOOLS if tool in run], run
    test = make_n("test", tmp_path)
    for needed in ("pip install --quiet -e .\n", "pip install --quiet -e '.[test]'",
                   "install-browser.sh", "install-faketime.sh", "-m pytest"):
        assert needed in test, (needed, test)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A wheel of this checkout, pip-installed into a fresh virtual environment whose only
    other packages are the dependencies (found where this suite's are, so nothing is
    downloaded); not the checkout itself, which this suite's environment has editable."""
    where = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "--quiet", "-w", str(where / "dist"),
                            str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    [wheel] = (where / "dist").glob("after-*.whl")
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    purelib = Path(subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
         "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies, from this suite's environment (a path, not its .pth files: the
    # editable `after` there is not seen)
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps",
                          "--no-index", "--quiet", str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    return {"wheel": wheel, "venv": venv, "home": where}


def run(installed, *args, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AFTER_")}
    environ.pop("PYTHONPATH", None)
    environ["PATH"] = f"{installed['venv'] / 'bin'}:{environ.get('PATH', '')}"
    environ["PATH"] = ":".join(p for p in environ["PATH"].split(":")
                               if Path(p) != BIN and "node_modules" not in p)
    environ.update(AFTER_HOME=str(installed["home"] / "home"), **env)
    return subprocess.run(list(args), env=environ, cwd=installed["home"], capture_output=True,
                          text=True, timeout=120)


def test_the_wheel_ships_py_typed_and_the_dashboard(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert "after/py.typed" in names
    assert {"after/dashboard/index.html", "after/dashboard/app.js"} <= set(names)
    assert not [n for n in names if n.startswith(("tests/", "jobs/", "bench/"))]


def test_after_and_the_client_work_from_the_installed_package(installed, couch_url, store):
    python = str(installed["venv"] / "bin" / "python")
    where = run(installed, python, "-c", "import after; print(after.__file__)")
    assert where.stdout.startswith(str(installed["venv"])), where  # the wheel's, not ours
    version = run(installed, str(installed["venv"] / "bin" / "after"), "--version")
    assert version.returncode == 0 and "0.1.0" in version.stdout
    env = {"AFTER_COUCHDB_URL": couch_url, "AFTER_DB": store.db}
    jobs = run(installed, "after", "jobs", **env)  # no jobs folder here: the built-in ones
    assert jobs.returncode == 0, jobs.stderr
    assert [line.split()[0] for line in jobs.stdout.splitlines()[1:3]] == ["http", "webhook"]
    script = ("from after import Client, __all__\n"
              "import warnings; warnings.simplefilter('ignore')\n"
              "with Client() as client:\n"
              "    task_id = client.schedule('http', worker='w', at='+1h',\n"
              "                              kwargs={'url': 'http://example.invalid/'})\n"
              "    print(client.get(task_id)['status'], 'Client' in __all__)\n")
    client = run(installed, python, "-c", script, **env)
    assert client.stdout == "waiting True\n", client.stderr
    added = run(installed, "after", "add", "http", "-w", "w", "--kwargs",
                '{"url": "http://example.invalid/"}', **env)
    assert added.returncode == 0, added.stderr


def test_after_server_says_in_one_line_how_to_get_it_or_runs_it(installed):
    missing = run(installed, "after", "server", "start", "--memory")
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.startswith("after: error: the embedded server is pouchdb-server, "
                                     "a Node.js program: `npm install -g pouchdb-server@4.2.0`")
    assert "make" not in missing.stderr  # no checkout here to run make in
    # docs/deploy.rst, "Installing with pip", shows the wheel's name and this line as they are
    shown = [line.strip() for line in (ROOT / "docs" / "deploy.rst").read_text().splitlines()]
    assert missing.stderr.strip() in shown
    assert f"/srv/after/.venv/bin/pip install ./{installed['wheel'].name}" in shown
    port = free_port()
    pouchdb = ROOT / "node_modules" / ".bin" / "pouchdb-server"
    env = {"AFTER_POUCHDB_SERVER": str(pouchdb), "AFTER_COUCHDB_URL": f"http://127.0.0.1:{port}"}
    started = run(installed, "after", "server", "start", "--memory", **env)
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith(f"embedded server running at http://127.0.0.1:{port}")
        assert run(installed, "after", "setup", **env).returncode == 0
    finally:
        assert run(installed, "after", "server", "stop", **env).returncode == 0
