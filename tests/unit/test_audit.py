"""``after.audit``: the occurrences a schedule implies against the run records, pure, at a
fixed ``NOW`` (documents and records as the worker writes them; no server, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from after import audit as a
from after.rules import occurrence as occ
from after.rules.calendar import parse_exclude
from after.rules.dates import format_date

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def at(hours: float) -> datetime:
    return NOW + timedelta(hours=hours)


def task(status="waiting", date=-6.0, repeat=None, **fields) -> dict:
    doc = {"_id": "t", "worker": "w", "job": {"name": "j"}, "status": status,
           "date": format_date(at(date))}
    if repeat is not None:
        doc["repeat"] = repeat
    doc.update(fields)
    return doc


def hourly(date=-6.0, **fields) -> dict:
    """A task every hour; by default its series began 6 hours ago and it is due now."""
    fields.setdefault("after", {"anchor": format_date(at(-6))})
    return task(date=date, repeat={"hours": 1}, **fields)


def run(when: datetime, *, late=0.5, attempt=1, outcome="done", kind=None, task_id="t",
        error=None, n=[0]) -> dict:  # noqa: B006 - a counter of ids
    n[0] += 1
    started = when + timedelta(seconds=late)
    record = {"_id": f"{task_id}#{n[0]:08d}#x", "type": "run", "task": task_id, "number": n[0],
              "attempt": attempt, "scheduled": format_date(when),
              "occurrence": occ.key("t", when), "occurrence_date": format_date(when),
              "started": format_date(started), "ended": format_date(started),
              "outcome": outcome}
    if kind:
        record.update(kind=kind, parent="t", task=f"t:{kind}:{format_date(when)}")
    if error:
        record["error"] = {"message": error}
    return record


def verdicts(doc, runs, start=-6.0, end=0.0, late=60.0, **kw) -> list[tuple[float, str]]:
    audit = a.audit_task(doc, runs, at(start), at(end), NOW, late=late, **kw)
    return [((e.date - NOW) / HOUR, e.verdict) for e in audit.entries]


def test_each_verdict_from_its_records():
    runs = [run(at(-6)), run(at(-5), late=300), run(at(-4), outcome="missed",
                                                     error="missed: would have started 90.0s late"),
            run(at(-3), outcome="skipped", error="skipped: run 3 of this task was still going"),
            run(at(-2)), run(at(-2), late=2)]  # two runs of attempt 1
    audit = a.audit_task(hourly(), runs, at(-6), at(0), NOW)
    got = {(e.date - NOW) / HOUR: (e.verdict, e.reason) for e in audit.entries}
    assert got == {
        -6: ("on_time", None),
        -5: ("late", "started 300.0s after it was due"),
        -4: ("missed", "missed: would have started 90.0s late"),
        -3: ("skipped", "skipped: run 3 of this task was still going"),
        -2: ("twice", "ran 2 runs of attempt 1"),
        -1: ("never", None),
        0: ("pending", "due less than 60s ago"),
    }
    assert audit.counts == {"on_time": 1, "late": 1, "backfilled": 0, "twice": 1, "missed": 1,
                            "skipped": 1, "never": 1, "pending": 1, "extra": 0}
    [five] = [e for e in audit.entries if e.date == at(-5)]
    assert five.lateness == 300.0 and five.outcome == "done" and len(five.runs) == 1


def test_retries_and_a_rerun_after_a_dead_process_are_attempts_not_twice():
    runs = [run(at(-6), outcome="error", error="boom"), run(at(-6), attempt=2, late=30),
            run(at(-5), outcome="interrupted", error="interrupted: worker process x stopped"),
            run(at(-5), attempt=2, late=20)]
    audit = a.audit_task(hourly(), runs, at(-6), at(-5), NOW)
    assert [(e.verdict, e.outcome, len(e.runs)) for e in audit.entries] == [
        ("on_time", "done", 2), ("on_time", "done", 2)]
    assert audit.entries[0].lateness == 0.5  # the first attempt's start


def test_a_run_cut_by_a_stop_and_begun_again_after_is_one_run_not_twice():
    """Chaos (a SIGTERM past the grace): the stopping process records the run
    ``interrupted`` and hands the task back as the same attempt; the next owner runs it
    again once it ended. Two runs of that attempt overlapping in time stay twice."""
    cut = run(at(-6), late=1, outcome="interrupted",
              error="interrupted: the worker stopped before the run ended (grace period over)")
    cut["ended"] = format_date(at(-6) + timedelta(seconds=5))
    again = run(at(-6), late=5.4)
    overlapping = run(at(-5), late=1, outcome="interrupted", error="interrupted: ...")
    overlapping["ended"] = format_date(at(-5) + timedelta(seconds=5))
    during = run(at(-5), late=3)
    audit = a.audit_task(hourly(), [cut, again, overlapping, during], at(-6), at(-5), NOW)
    assert [(e.verdict, e.outcome, len(e.runs)) for e in audit.entries] == [
        ("on_time", "done", 2), ("twice", "done", 2)]


def test_the_late_threshold():
    runs = [run(at(-2), late=10), run(at(-1), late=11)]
    assert verdicts(hourly(), runs, -2, -1, late=10) == [(-2, "on_time"), (-1, "late")]
    assert verdicts(hourly(), runs, -2, -1, late=60) == [(-2, "on_time"), (-1, "on_time")]


def test_a_backfill_of_an_occurrence_that_never_ran_and_of_one_that_ran():
    runs = [run(at(-3), kind="backfill", late=7200),
            run(at(-2)), run(at(-2), kind="backfill", late=3600),
            run(at(-1), outcome="missed", error="missed: late"),
            run(at(-1), kind="backfill", late=600)]
    audit = a.audit_task(hourly(), runs, at(-3), at(-1), NOW)
    assert [(e.verdict, e.reason) for e in audit.entries] == [
        ("backfilled", f"run by a backfill at {format_date(at(-1))}"),
        ("twice", "ran on schedule and by a backfill"),
        ("backfilled", f"run by a backfill at {format_date(at(-1) + 600 * SECOND)} "
                       "(missed: late)")]


SECOND = timedelta(seconds=1)


def test_manual_runs_and_runs_of_no_occurrence_are_extra():
    manual = run(at(-2.5), kind="manual")
    stray = run(at(-1.5))  # a date the hourly rule does not name
    outside = run(at(-30))
    audit = a.audit_task(hourly(), [manual, stray, outside, run(at(-2))], at(-3), at(-1), NOW)
    assert [(e.verdict) for e in audit.entries] == ["never", "on_time", "never"]
    assert [(x["run"], x["kind"], x["reason"]) for x in audit.extra] == [
        (manual["_id"], "manual", "a manual run (after run)"),
        (stray["_id"], None, "no occurrence of the schedule")]
    assert audit.counts["extra"] == 2


def test_a_one_off_task():
    assert verdicts(task(date=-2), [run(at(-2))], -3, 0) == [(-2, "on_time")]
    assert verdicts(task(date=-2), [], -3, 0) == [(-2, "never")]
    assert verdicts(task(date=-2), [], -1, 0) == []  # not in the window
    assert verdicts(task(date=1), [], -3, 2) == []  # not due yet
    never = a.audit_task(task(date=-2), [], at(-3), at(0), NOW).entries[0]
    assert never.reason == "still waiting: no process of worker w took it"
    # canceled before its date: nothing implied; after it, it never ran
    canceled = task("canceled", date=-2, after={"canceled": format_date(at(-3))})
    assert verdicts(canceled, [], -3, 0) == []
    late_cancel = task("canceled", date=-2, after={"canceled": format_date(at(-1))})
    assert verdicts(late_cancel, [], -3, 0) == [(-2, "never")]


def test_held_or_running_now_is_pending():
    doc = hourly(date=-1, status="running", after={"anchor": format_date(at(-6)),
                                                   "owner": "w@h:1:x"})
    audit = a.audit_task(doc, [], at(-1), at(0), NOW)
    assert [(e.verdict, e.reason) for e in audit.entries] == [
        ("pending", "running now"), ("pending", "due less than 60s ago")]


def test_the_series_bounds():
    # a task that never ran: its date is its first occurrence, nothing before it
    fresh = task(date=-2, repeat={"hours": 1})
    assert verdicts(fresh, [], -6, 0) == [(-2, "never"), (-1, "never"), (0, "pending")]
    # a finished series (limit reached: the worker dropped the anchor): from its first run
    # to its last date
    done = task("done", date=-3, repeat={"hours": 1, "limit": 3}, after={"runs": 3})
    runs = [run(at(-5)), run(at(-4)), run(at(-3))]
    assert verdicts(done, runs, -8, 0) == [(-5, "on_time"), (-4, "on_time"), (-3, "on_time")]
    # canceled: up to the moment it was
    canceled = hourly(status="canceled", after={"anchor": format_date(at(-6)),
                                                "canceled": format_date(at(-3.5))})
    assert [h for h, _ in verdicts(canceled, [], -6, 0)] == [-6, -5, -4]
    # until
    until = task(date=-6, repeat={"hours": 1, "until": format_date(at(-4))})
    assert [h for h, _ in verdicts(until, [], -6, 0)] == [-6, -5, -4]


def test_excluded_days_and_pauses_are_skipped_with_their_reason():
    daily = task(date=-72, repeat={"days": 1, "exclude": ["2026-11-29", {"calendar": "fr"}]},
                 after={"anchor": format_date(at(-72))})
    audit = a.audit_task(daily, [], at(-72), at(0), NOW,
                         calendars={"fr": parse_exclude(["2026-11-30"])})
    got = {e.date.date().isoformat(): (e.verdict, e.reason) for e in audit.entries}
    assert got == {
        "2026-11-28": ("never", "still waiting: no process of worker w took it"),
        "2026-11-29": ("skipped", "skipped: 2026-11-29 is excluded (repeat.exclude)"),
        "2026-11-30": ("skipped", "skipped: 2026-11-30 is excluded (calendar fr)"),
        "2026-12-01": ("pending", "due less than 60s ago"),
    }
    # a pause kept by a resume, the task's current pause, the worker name's
    kept = hourly(after={"anchor": format_date(at(-6)), "pauses": [
        {"from": format_date(at(-5.5)), "to": format_date(at(-4.5))}, {"from": "junk"}]})
    assert verdicts(kept, [], -6, -1) == [(-6, "never"), (-5, "skipped"), (-4, "never"),
                                          (-3, "never"), (-2, "never"), (-1, "never")]
    paused = hourly(date=-2, status="paused", after={"anchor": format_date(at(-6)),
                                                     "paused": format_date(at(-2.5))})
    audit = a.audit_task(paused, [], at(-3), at(-1), NOW)
    assert [(e.verdict, e.reason) for e in audit.entries] == [
        ("never", None), ("skipped", f"the task is paused since {format_date(at(-2.5))}"),
        ("skipped", f"the task is paused since {format_date(at(-2.5))}")]
    name = a.audit_task(hourly(), [], at(-3), at(-1), NOW, name_paused=at(-1.5))
    assert [e.verdict for e in name.entries] == ["never", "never", "skipped"]
    assert name.entries[-1].reason == f"worker name w is paused since {format_date(at(-1.5))}"
    # a record says more than the pause: it ran
    assert verdicts(paused, [run(at(-2))], -2, -2) == [(-2, "on_time")]


def test_a_jittered_occurrence_is_late_from_its_jittered_instant():
    doc = task(date=-6, repeat={"hours": 1, "jitter": 600},
               after={"anchor": format_date(at(-6))})
    due = occ.jittered("t", at(-3), 600)
    assert due > at(-3)
    runs = [run(at(-3), late=(due - at(-3)).total_seconds() + 1)]
    [entry] = a.audit_task(doc, runs, at(-3), at(-3), NOW).entries
    assert (entry.verdict, entry.due, entry.lateness) == ("on_time", due, 1.0)


def test_a_task_that_cannot_be_read_and_an_extra_runs_task():
    audit = a.audit_task({"_id": "bad", "worker": "w", "date": "soon"}, [], at(-1), NOW, NOW)
    assert audit.error.startswith("date: 'soon' is not an ISO 8601") and not audit.entries
    extra = task(date=-1, _id="t:backfill:x", occurrence={
        "task": "t", "kind": "backfill", "date": format_date(at(-1))})
    extra["_id"] = f"t:backfill:{format_date(at(-1))}"
    assert a.audit_task(extra, [], at(-2), NOW, NOW).entries == ()


def test_too_large_a_window_says_so():
    every_second = task(date=-3, repeat={"seconds": 1})
    with pytest.raises(a.AuditError, match="more than 10000 occurrences of task t"):
        a.audit_task(every_second, [], at(-3), NOW, NOW)
    assert len(a.audit_task(every_second, [], at(-2.5), at(-2), NOW).entries) == 1801


def test_the_report_and_its_json():
    audits = [a.audit_task(hourly(), [run(at(-1))], at(-1), at(0), NOW),
              a.audit_task({**task(date=5), "_id": "future"}, [], at(-1), at(0), NOW)]
    report = a.report(at(-1), at(0), NOW, 60.0, audits)
    assert [t.task for t in report.tasks] == ["t"]  # nothing implied, nothing extra: left out
    data = report.as_json()
    assert data["counts"]["on_time"] == 1 and data["counts"]["pending"] == 1
    first = data["tasks"][0]["occurrences"][0]
    assert first == {"task": "t", "occurrence": format_date(at(-1)),
                     "id": occ.key("t", at(-1)), "due": format_date(at(-1)),
                     "verdict": "on_time", "reason": None, "lateness_s": 0.5,
                     "outcome": "done", "runs": [first["runs"][0]]}


def test_both_instances_of_a_repeated_time_are_two_occurrences():
    """A cron rule with ``dst.fold: both``: two occurrences of one local time, each judged
    by its own records."""
    doc = {"_id": "t", "worker": "w", "job": {"name": "j"}, "status": "waiting",
           "date": "2026-11-02T06:30:00Z",
           "repeat": {"cron": "30 1 * * *", "tz": "America/New_York", "dst": {"fold": "both"}},
           "after": {"anchor": "2026-10-31T05:30:00Z"}}
    once, twice = datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30,
                                                                    tzinfo=UTC)
    audit = a.audit_task(doc, [run(once)], once - HOUR, twice + HOUR, NOW)
    assert [(e.date, e.verdict) for e in audit.entries] == [(once, "on_time"),
                                                          (twice, "never")]
    assert audit.entries[0].as_json()["id"] != audit.entries[1].as_json()["id"]


WHAT = st.sampled_from(["on_time", "late", "missed", "skipped", "twice", "never",
                        "retried", "backfilled"])


@settings(max_examples=200, deadline=None)
@given(st.lists(WHAT, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_generated_histories_get_the_verdicts_that_made_them(history, rand):
    """Whatever happened to each occurrence of an hourly series (records written in any
    order), the audit says it: one verdict each, and no record left over."""
    start = at(-len(history) - 1)
    doc = task(date=-len(history) - 1, repeat={"hours": 1},
               after={"anchor": format_date(start)})
    runs, wanted = [], []
    for k, what in enumerate(history):
        when = start + k * HOUR
        wanted.append({"retried": "on_time"}.get(what, what))
        if what == "on_time":
            runs.append(run(when, late=rand.uniform(0, 59)))
        elif what == "late":
            runs.append(run(when, late=rand.uniform(61, 3000)))
        elif what in ("missed", "skipped"):
            runs.append(run(when, outcome=what, error=f"{what}: why"))
        elif what == "twice":
            runs += [run(when, late=rand.uniform(0, 5)), run(when, late=rand.uniform(0, 5))]
        elif what == "retried":
            runs += [run(when, outcome="error", error="x"), run(when, attempt=2, late=90)]
        elif what == "backfilled":
            runs.append(run(when, kind="backfill", late=rand.uniform(10, 10000)))
    rand.shuffle(runs)
    end = start + (len(history) - 1) * HOUR
    audit = a.audit_task(doc, runs, start, end, NOW)
    assert [e.verdict for e in audit.entries] == wanted
    assert sum(len(e.runs) for e in audit.entries) == len(runs) and audit.extra == ()


@pytest.mark.parametrize("policy, expected", [
    (None, [*[(h, "missed") for h in range(-6, 0)], (0, "late")]),
    ("all", [(h, "late") for h in range(-6, 1)]),
    ("none", [(h, "missed") for h in range(-6, 1)]),
])
def test_a_worker_name_paused_then_resumed_is_read_from_the_catch_ups_records(policy,
                                                                              expected):
    """Issue 25, item 6: once a name's pause is over nothing says it was paused, but the
    catch-up made on resume recorded each occurrence it did not run (``missed``, and why):
    none of them is ``never``. Here the name was paused 6.5 h and resumed at NOW; the
    records are the worker's own (:func:`after.worker.runs.catch_up`)."""
    from after.rules import task as rules
    from after.worker import runs as r

    me = r.Identity(name="w", process="w@here:1:aaaaaa", host="here", pid=1)
    doc = hourly(**({"catchup": {"policy": policy}} if policy else {}))
    resumed = NOW + timedelta(seconds=90)
    caught = r.catch_up(doc, rules.parse(doc), me, resumed)
    if policy == "all":  # nothing to move: each occurrence runs, in turn, from its date
        assert caught is None
        doc, records = doc, [run(at(h), late=-3600 * h + 91 + h + 6) for h in range(-6, 1)]
    else:  # the latest runs, or none: the others are recorded missed
        doc, records = caught.doc, list(caught.skipped)
        if policy is None:
            records.append(run(rules.instant(doc["date"]), late=91))
    audit = a.audit_task(doc, records, at(-6), at(0), resumed + HOUR, late=30)
    assert [((e.date - NOW) / HOUR, e.verdict) for e in audit.entries] == expected
    missed = [e for e in audit.entries if e.verdict == "missed"]
    assert all(e.reason.startswith("missed: ") for e in missed)


def test_a_runs_record_kept_beside_another_of_the_same_run_is_one_run():
    """A process whose record of a run conflicted with one another process wrote (it took
    the run over, believing the first dead: ``interrupted``) keeps its own beside it, as
    ``ID~late`` (after.worker.runner): one run, not twice. Seen in the cluster failover test."""
    taken = run(at(-2), outcome="interrupted")
    beside = {**run(at(-2), late=0.7), "_id": taken["_id"] + "~late", "late": True}
    audit = a.audit_task(hourly(), [taken, beside], at(-2), at(-2), NOW)
    [entry] = audit.entries
    assert (entry.verdict, entry.outcome) == ("on_time", "done")
    assert entry.runs == (taken["_id"], beside["_id"])  # both named
    unmarked = {k: v for k, v in beside.items() if k != "late"}  # the id alone says so
    assert verdicts(hourly(), [taken, unmarked], -2, -2) == [(-2, "on_time")]
    again = run(at(-2), late=2)  # a second record of attempt 1 that is no such pair
    assert verdicts(hourly(), [taken, beside, again], -2, -2) == [(-2, "twice")]
