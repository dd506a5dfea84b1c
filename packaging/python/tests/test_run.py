"""receptord.run via a real mesh against ansible_runner.run locally: same outcome, same
events, same handler calls; run_async, arun, cancel."""
import asyncio
import os
import time

import ansible_runner
import receptord
from conftest import SLOW_PLAY, make_pdd


class Calls:
    """Counts handler calls and keeps what they were given."""

    def __init__(self):
        self.events, self.statuses, self.artifacts, self.finished = [], [], [], []

    def kwargs(self):
        return dict(
            event_handler=lambda e: self.events.append(e) or True,
            status_handler=lambda s, runner_config: self.statuses.append(s["status"]),
            artifacts_handler=self.artifacts.append,
            finished_callback=self.finished.append,
        )


def run_both(mesh, pdd, local_pdd, **extra):
    local, remote = Calls(), Calls()
    lr = ansible_runner.run(private_data_dir=local_pdd, playbook="test.yml", quiet=True, **local.kwargs(), **extra)
    rr = receptord.run(
        private_data_dir=pdd,
        playbook="test.yml",
        quiet=True,
        via_receptor="node2",
        receptor_peer=mesh,
        **remote.kwargs(),
        **extra,
    )
    return lr, local, rr, remote


def test_same_outcome_events_stats_and_handlers_as_ansible_runner(mesh, pdd, local_pdd):
    lr, local, rr, remote = run_both(mesh, pdd, local_pdd, ident="same1")
    assert (rr.status, rr.rc) == (lr.status, lr.rc) == ("successful", 0)
    assert [e["event"] for e in rr.events] == [e["event"] for e in lr.events]
    assert rr.stats == lr.stats
    assert rr.stats["ok"] == {"localhost": 2}
    assert [e["event"] for e in remote.events] == [e["event"] for e in local.events]
    assert remote.statuses == local.statuses
    assert len(remote.artifacts) == len(local.artifacts) == 1
    assert remote.artifacts[0] == rr.artifact_dir == os.path.join(pdd, "artifacts", "same1")
    assert remote.finished == [rr] and len(local.finished) == 1
    assert [e["event"] for e in rr.host_events("localhost")] == [e["event"] for e in lr.host_events("localhost")]
    with rr.stdout as f:
        assert "hello world" in f.read()
    assert rr.config.ident == "same1"


def test_extravars_and_a_failed_play_match_ansible_runner(mesh, pdd, local_pdd):
    play = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.fail:\n        msg: 'no {{ who }}'\n"
    for d in (pdd, local_pdd):
        with open(os.path.join(d, "project", "test.yml"), "w") as f:
            f.write(play)
    lr, _, rr, _ = run_both(mesh, pdd, local_pdd, extravars={"who": "luck"})
    assert (rr.status, rr.rc) == (lr.status, lr.rc) == ("failed", 2)
    assert rr.stats == lr.stats
    failed = [e for e in rr.events if e["event"] == "runner_on_failed"]
    assert failed and failed[0]["event_data"]["res"]["msg"] == "no luck"


def test_event_handler_returning_false_drops_the_event_as_ansible_runner(mesh, pdd):
    r = receptord.run(
        private_data_dir=pdd,
        playbook="test.yml",
        quiet=True,
        via_receptor="node2",
        receptor_peer=mesh,
        event_handler=lambda e: e["event"] != "runner_on_ok",
    )
    kinds = [e["event"] for e in r.events]
    assert r.status == "successful" and "playbook_on_stats" in kinds
    assert "runner_on_ok" not in kinds


def test_run_async_returns_thread_and_runner(mesh, pdd):
    calls = Calls()
    thread, runner = receptord.run_async(
        private_data_dir=pdd, playbook="test.yml", quiet=True, via_receptor="node2", receptor_peer=mesh,
        **calls.kwargs(),
    )
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert (runner.status, runner.rc) == ("successful", 0)
    assert calls.finished == [runner]
    assert calls.statuses[-1] == "successful"


def test_asyncio_variant(mesh, pdd):
    async def main():
        return await receptord.arun(
            private_data_dir=pdd, playbook="test.yml", quiet=True, via_receptor="node2", receptor_peer=mesh
        )

    r = asyncio.run(main())
    assert (r.status, r.rc) == ("successful", 0)
    assert r.stats["ok"] == {"localhost": 2}


def sleepers():
    """PIDs of the slow play's remote command (its argument is unique to this test)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:2] == [b"sleep", b"31.25"]:
                    found.append(pid)
        except OSError:
            continue
    return found


def test_cancel_callback_stops_the_remote_job(mesh, tmp_path):
    pdd = make_pdd(tmp_path, SLOW_PLAY)
    started = []
    statuses = []

    def on_event(e):
        if e["event"] == "runner_on_start":
            started.append(e)

    def cancel():
        # Cancel once the remote command is really running.
        return bool(started) and bool(sleepers())

    r = receptord.run(
        private_data_dir=pdd, playbook="test.yml", quiet=True, via_receptor="node2", receptor_peer=mesh,
        event_handler=on_event, cancel_callback=cancel,
        status_handler=lambda s, runner_config: statuses.append(s["status"]),
    )
    assert r.status == "canceled" and r.canceled and r.rc == 254
    assert statuses[-1] == "canceled"
    for _ in range(200):
        if not sleepers():
            break
        time.sleep(0.05)
    assert not sleepers(), "the remote command was stopped"


def test_asyncio_task_cancel_stops_the_remote_job(mesh, tmp_path):
    pdd = make_pdd(tmp_path, SLOW_PLAY)

    async def main():
        task = asyncio.ensure_future(
            receptord.arun(private_data_dir=pdd, playbook="test.yml", quiet=True, via_receptor="node2", receptor_peer=mesh)
        )
        for _ in range(600):
            if sleepers():
                break
            await asyncio.sleep(0.05)
        assert sleepers(), "the remote command started"
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(main())
    for _ in range(200):
        if not sleepers():
            break
        time.sleep(0.05)
    assert not sleepers()


def test_concurrent_runs_share_one_receptor_node_id(mesh, tmp_path):
    """Threads of one controller, all speaking as "controller" at once (each `receptor run`
    is a session of that ID in the mesh)."""
    import concurrent.futures

    pdds = [make_pdd(tmp_path, name=f"c{i}") for i in range(4)]

    def one(pdd):
        return receptord.run(
            private_data_dir=pdd,
            playbook="test.yml",
            quiet=True,
            via_receptor="node2",
            receptor_peer=mesh,
            receptor_node_id="controller",
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        runners = list(pool.map(one, pdds))
    assert [(r.status, r.rc) for r in runners] == [("successful", 0)] * 4


def test_aruns_are_not_capped_by_the_default_executor(mesh, tmp_path):
    """Two runs that each wait for the other to have started: with asyncio's default
    executor narrowed to one thread, they still meet (each arun has a thread of its own)."""
    import concurrent.futures

    meet = tmp_path / "meet"
    meet.mkdir()
    play = (
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.shell: |\n"
        f"        touch {meet}/{{{{ me }}}}\n"
        f"        for i in $(seq 600); do [ $(ls {meet} | wc -l) -ge 2 ] && exit 0; sleep 0.1; done; exit 1\n"
    )
    pdds = [make_pdd(tmp_path, play, name=f"a{i}") for i in range(2)]

    async def main():
        asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(1))
        runs = [
            receptord.arun(private_data_dir=p, playbook="test.yml", quiet=True, extravars={"me": f"r{i}"},
                           via_receptor="node2", receptor_peer=mesh)
            for i, p in enumerate(pdds)
        ]
        return await asyncio.gather(*runs)

    assert [(r.status, r.rc) for r in asyncio.run(main())] == [("successful", 0)] * 2
