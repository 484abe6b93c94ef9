"""Spare workers' book on server 0 (`WorkerSlots`) and the server's side of a takeover: a lost
worker handed to the first free spare from its last reported step, the dead process's pushes
fenced, a second loss taking the next spare, and no spare left meaning lost for good."""

import json
import threading
import time

import pytest
from test_ps_service import grads, make_server

from scaletrain.parallel.ps.account import membership_events, read_history
from scaletrain.parallel.ps.slots import WorkerSlots


def test_a_lost_worker_goes_to_the_first_free_spare_from_its_last_step():
    slots = WorkerSlots(3, ["spare0", "spare1"])
    slots.report(1, 0)  # its first pull
    slots.report(1, 7)
    slots.report(1, 5)  # a late report never moves a worker back
    takeover = slots.take_over(1)
    assert (takeover.worker, takeover.spare, takeover.step, takeover.incarnation) == (
        1,
        "spare0",
        7,
        1,
    )
    assert slots.hosts == {0: "worker0", 1: "spare0", 2: "worker2"}
    assert slots.free == ["spare1"]
    again = slots.take_over(1)  # the spare died too: the next one, from the spare's position
    assert (again.spare, again.step, again.incarnation) == ("spare1", 7, 2)
    assert slots.take_over(2) is None  # none left: the run goes on without worker 2


def test_a_worker_that_never_reported_starts_where_the_others_started():
    slots = WorkerSlots(2, ["spare0"])
    slots.report(0, 40)  # a resumed run: worker 0 pulled at the checkpoint's step 40
    slots.report(0, 45)
    assert slots.start_step(1) == 45
    assert WorkerSlots(2, ["spare0"]).start_step(1) == 0  # a fresh run


def test_a_waiting_spare_gets_its_takeover_or_is_released():
    slots = WorkerSlots(2, ["spare0", "spare1"])
    answers = {}

    def wait(spare):
        answers[spare] = slots.wait(spare, timeout_s=30)

    threads = [threading.Thread(target=wait, args=(name,)) for name in ("spare0", "spare1")]
    for thread in threads:
        thread.start()
    slots.take_over(1)
    threads[0].join(timeout=30)
    assert answers["spare0"].worker == 1 and "spare1" not in answers
    slots.release()
    threads[1].join(timeout=30)
    assert answers["spare1"] is None
    assert slots.take_over(0) is None  # released: the run is over, nobody takes over


def test_a_dead_spare_takes_nothing_over():
    slots = WorkerSlots(2, ["spare0", "spare1"])
    slots.spare_lost("spare0")
    assert slots.take_over(1).spare == "spare1"


def test_server_0_logs_the_takeover_and_keeps_waiting_for_the_worker(tmp_path):
    server, log = make_server(tmp_path)
    server.slots = WorkerSlots(2, ["spare0"])
    server.pull(-1, 1, 0)
    server.push(1, 1, 0, grads(1.0), 0.1)
    server.push(0, 3, 1, grads(0.0), 0.1)  # worker 0 at its step 3 when worker 1 is lost
    started = time.time()
    takeover = server.worker_lost(1)
    assert takeover.step == 1 and takeover.spare == "spare0" and takeover.spare_rank == 2
    assert 1 not in server.left and 1 not in server.done  # the spare trains it to the end
    with pytest.raises(RuntimeError, match="replaced"):  # a late push of the dead process
        server.push(1, 2, 1, grads(1.0), 0.1)
    applied, *_ = server.push(1, 2, 2, grads(1.0), 0.1, 1)  # the spare's own
    assert applied and server.store.version == 3
    server.worker_done(0)
    server.worker_done(1)
    assert server.trained.is_set()
    summary = server.summary()
    assert summary["lost_workers"] == [1]
    (rejoined,) = summary["rejoined"]
    moment = rejoined.pop("time")
    assert started <= moment <= time.time()
    assert rejoined == {
        "worker": 1,
        "spare": "spare0",
        "step": 1,
        "incarnation": 1,
        "spare_rank": 2,
        "version": 2,
        "run_step": 3,
    }
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    logged = [line for line in lines if "event" in line]
    assert logged == summary["membership"] + [
        {"event": "push_of_replaced_process", "worker": 1, "step": 2}
    ]
    assert summary["membership"][0] == {
        "event": "worker_lost",
        "worker": 1,
        "version": 2,
        "process": "worker1",
        "time": summary["membership"][0]["time"],
        "run_step": 3,
    }
    events = membership_events(summary)
    assert [e["event"] for e in events] == ["worker_lost", "worker_rejoined"]
    assert "a spare took its place" in events[0]["detail"] and events[1]["from_step"] == 2
    assert [e["step"] for e in events] == [3, 3]  # on worker 0's step axis


def test_a_resumed_server_0_recalls_the_earlier_attempts_losses_from_its_log(tmp_path):
    first, log = make_server(tmp_path, workers=3)
    first.slots = WorkerSlots(3, ["spare0"])
    first.push(2, 4, 0, grads(1.0), 0.1)
    first.worker_lost(2)  # taken over by spare0
    first.worker_lost(1)  # no spare left
    first.close()
    with log.open("a") as file:  # a kill cut the last push line short
        file.write('{"version": 9, "worker": 0, "step": 5, "event": "worker_lo')
    history = read_history(log)
    assert [(r["event"], r["worker"]) for r in history] == [
        ("worker_lost", 2),
        ("worker_rejoined", 2),
        ("worker_lost", 1),
    ]
    assert history == first.summary()["membership"]
    resumed, _ = make_server(tmp_path, workers=3)
    resumed.slots = WorkerSlots(3, ["spare0"])
    resumed.recall(history)
    resumed.push(2, 5, 0, grads(1.0), 0.1)
    resumed.worker_lost(2)  # this attempt's own takeover, after the recalled ones
    summary = resumed.summary()
    assert summary["lost_workers"] == [2, 1, 2]
    assert [(t["worker"], t["incarnation"]) for t in summary["rejoined"]] == [(2, 1), (2, 1)]
    details = [e["detail"] for e in membership_events(summary)]
    assert details == [
        "worker rank 2 died; a spare took its place",
        "spare0 took over worker rank 2 from step 5 (server 0 version 1)",
        "worker rank 1 died; the others trained on without it",
        "worker rank 2 died; a spare took its place",
        "spare0 took over worker rank 2 from step 6 (server 0 version 1)",
    ]
    assert read_history(tmp_path / "missing.jsonl") == []
    resumed.close()  # its lines start after the cut one: only that one is unreadable
    lines = log.read_text().splitlines()
    unreadable = [line for line in lines if not line.endswith("}")]
    assert unreadable == ['{"version": 9, "worker": 0, "step": 5, "event": "worker_lo']
    after = [json.loads(line) for line in lines[lines.index(unreadable[0]) + 1 :]]
    assert [(r.get("event"), r["worker"]) for r in after] == [
        (None, 2),  # the push of step 5
        ("worker_lost", 2),
        ("worker_rejoined", 2),
    ]


def test_with_no_spare_left_after_its_last_step_or_as_worker_0_it_is_lost_for_good(tmp_path):
    server, _ = make_server(tmp_path, workers=3)
    server.slots = WorkerSlots(3, [])
    assert server.worker_lost(2) is None and 2 in server.left
    server.slots = WorkerSlots(3, ["spare0"])
    server.worker_done(1)
    assert server.worker_lost(1) is None and 1 in server.left  # done: nothing to take over
    assert server.worker_lost(0) is None and 0 in server.left  # it wrote the run directory
    assert server.slots.free == ["spare0"]
    events = membership_events(server.summary())
    assert all("trained on without it" in e["detail"] for e in events)
