"""Whether a live process serves a worker name (after.couch.serving), and its twin in the
dashboard's model.js: one table of cases, tests/cases/serving.json, checked in both."""

from __future__ import annotations

import json

from after.couch import serving

from ..js import cases, model_url, node

CASES = cases("serving")
NOW = CASES["now"]


def test_the_shared_cases_in_python():
    for case in CASES["names"]:
        got = serving.serving(case["name"], case["workers"], case["paused"], NOW)
        assert got == case["expect"], case
    for case in CASES["tasks"]:
        got = serving.unserved(case["task"], CASES["task_workers"], [], NOW)
        assert got == case["expect"], case


def test_the_shared_cases_in_the_dashboard_model():
    got = node(f"import * as m from '{model_url()}';\n"
               f"const cases = {json.dumps(CASES)};\n"
               "console.log(JSON.stringify({\n"
               "  names: cases.names.map((c) => m.serving(c.name, c.workers, c.paused,\n"
               "    cases.now)),\n"
               "  tasks: cases.tasks.map((c) => m.unserved(c.task, cases.task_workers, [],\n"
               "    cases.now)),\n"
               "}));")
    assert got == {"names": [c["expect"] for c in CASES["names"]],
                   "tasks": [c["expect"] for c in CASES["tasks"]]}


def worker(name, expires="2026-12-01T09:00:05.000Z"):
    return {"_id": f"{name}@h", "type": "worker", "name": name, "expires": expires}


def test_the_message_names_a_close_live_name_or_the_live_ones():
    docs = [worker("billing"), worker("reports"), worker("gone", "2026-12-01T08:00:00Z")]
    typo = serving.message("bilIing", serving.NONE, docs, NOW)
    assert typo == ("no live process serves the worker name bilIing (did you mean billing?): "
                    "its tasks wait until one starts (`after start bilIing`)")
    other = serving.message("mailer", serving.NONE, docs, NOW)
    assert "(live names: billing, reports)" in other and "gone" not in other
    assert "(no worker process is live at all)" in serving.message("x", serving.NONE, [], NOW)
    assert serving.message("billing", serving.PAUSED, docs, NOW) == (
        "the worker name billing is paused: its processes start nothing until "
        "`after resume billing`")
    assert serving.message("billing", serving.SERVED, docs, NOW) is None
    task = {"_id": "t", "worker": "bilIing", "status": "waiting"}
    assert serving.waits_unserved(task, docs, [], NOW) == typo
    assert serving.waits_unserved({**task, "status": "running"}, docs, [], NOW) is None



def test_a_process_row_shows_its_own_acknowledgement_and_the_pause_answer_is_said():
    """The dashboard's workers list: a process shows ``paused`` from its own heartbeat (it
    applied its name's pause), ``pausing`` while it has not yet; the answer of a pause
    names the processes that did not acknowledge it (issue 25 item 2)."""
    live = worker("billing")
    got = node(f"import * as m from '{model_url()}';\n"
               f"const live = {json.dumps(live)}, now = {json.dumps(NOW)};\n"
               "const stale = {...live, expires: '2026-12-01T08:00:00.000Z'};\n"
               "console.log(JSON.stringify({\n"
               "  states: [m.processState(live, false, now),\n"
               "    m.processState(live, true, now),\n"
               "    m.processState({...live, paused: true}, true, now),\n"
               "    m.processState({...stale, paused: true}, true, now)],\n"
               "  all: m.pauseMessage('billing', {acknowledged: ['a', 'b'],\n"
               "    unacknowledged: []}),\n"
               "  some: m.pauseMessage('billing', {acknowledged: ['a'],\n"
               "    unacknowledged: ['billing@h:1:x']}),\n"
               "  none: m.pauseMessage('billing', {acknowledged: [], unacknowledged: []}),\n"
               "}));")
    assert got["states"] == ["live", "pausing", "paused", "stale"]
    assert got["all"] == {"kind": "ok", "text": "Paused the worker name billing: "
                          "acknowledged by its 2 live processes."}
    assert got["some"]["kind"] == "error"
    assert got["some"]["text"].startswith(
        "Paused the worker name billing, but not acknowledged by billing@h:1:x: ")
    assert got["none"]["text"] == "Paused the worker name billing (no live process)."
