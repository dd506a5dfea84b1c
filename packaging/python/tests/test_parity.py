"""receptord.run beside the real ansible_runner.run (2.4.3): the same keywords and defaults,
TypeError for unknown ones, the same files in the private data dir (env files, inline
playbooks, inventories), idents, modes, Runner surface, fact cache, missing playbook,
timeout, tags, run_async; refusals carry their reason."""
import inspect
import io
import json
import os
import stat
import threading
import uuid
from contextlib import redirect_stdout

import ansible_runner
import ansible_runner.config._base
import ansible_runner.config.runner
import pytest
import receptord
from conftest import make_pdd
from receptord._kwargs import RUNNER_KWARGS

PLAYS = [{"hosts": "all", "gather_facts": False, "tasks": [{"debug": {"msg": "x={{ x | default('none') }}"}}]}]


def both(mesh, tmp_path, runs=("loc", "rem"), play=None, **kw):
    """The same run locally (ansible_runner) and on node2 (receptord), each in its own
    private data dir made alike."""
    out = []
    for name in runs:
        pdd = make_pdd(tmp_path, name=name) if play is None else make_pdd(tmp_path, play, name=name)
        if name == "loc":
            out.append(ansible_runner.run(private_data_dir=pdd, quiet=True, **kw))
        else:
            out.append(receptord.run(private_data_dir=pdd, quiet=True, via_receptor="node2", receptor_peer=mesh, **kw))
    return out


def signature_defaults(cls):
    return {
        n: p.default
        for n, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind is p.POSITIONAL_OR_KEYWORD and n != "self"
    }


def test_every_keyword_of_ansible_runner_run_with_its_default():
    expected = signature_defaults(ansible_runner.config._base.BaseConfig)
    expected.update(signature_defaults(ansible_runner.config.runner.RunnerConfig))
    expected["private_data_dir"] = None  # positional in RunnerConfig, optional in run()
    src = inspect.getsource(ansible_runner.interface.init_runner) + inspect.getsource(
        ansible_runner.utils.dump_artifacts
    )
    popped = {n for n in RUNNER_KWARGS if f"'{n}'" in src or f'"{n}"' in src}
    assert {k: v for k, v in RUNNER_KWARGS.items() if k in expected} == expected
    assert set(RUNNER_KWARGS) - set(expected) == popped - set(expected)
    for name in ("event_handler", "cancel_callback", "streamer", "_input", "role", "role_vars", "debug"):
        assert name in RUNNER_KWARGS


@pytest.mark.parametrize("bad", [{"playbok": "x.yml"}, {"hosts": "all"}, {"role_vars": {}}])
def test_unknown_keyword_is_a_type_error_as_in_ansible_runner(tmp_path, bad):
    pdd = make_pdd(tmp_path)
    with pytest.raises(TypeError) as local:
        ansible_runner.run(private_data_dir=pdd, playbook="test.yml", **bad)
    with pytest.raises(TypeError) as remote:
        receptord.run(private_data_dir=pdd, playbook="test.yml", via_receptor="node2", **bad)
    name = next(iter(bad))
    assert name in str(local.value) and name in str(remote.value)
    with pytest.raises(TypeError):
        receptord.run_async(private_data_dir=pdd, playbook="test.yml", **bad)


@pytest.mark.parametrize(
    "kw",
    [{"process_isolation": True}, {"artifact_dir": "/tmp/a"}, {"project_dir": "/tmp"}, {"streamer": "transmit"}],
)
def test_what_cannot_apply_remotely_is_refused_with_its_reason(tmp_path, kw):
    with pytest.raises(receptord.BadOptionsError) as e:
        receptord.run(private_data_dir=make_pdd(tmp_path), playbook="test.yml", **kw)
    assert next(iter(kw)) in str(e.value) and ":" in str(e.value)


def test_missing_private_data_dir_is_the_same_value_error(tmp_path):
    gone = str(tmp_path / "gone")
    with pytest.raises(ValueError) as local:
        ansible_runner.run(private_data_dir=gone, playbook="x.yml")
    with pytest.raises(ValueError) as remote:
        receptord.run(private_data_dir=gone, playbook="x.yml")
    assert str(local.value) == str(remote.value)


def listing(root):
    """Relative path -> (mode, content) of every file under root/env, project, inventory."""
    out = {}
    for sub in ("env", "project", "inventory"):
        top = os.path.join(root, sub)
        for d, _, files in os.walk(top):
            out[os.path.relpath(d, root)] = stat.S_IMODE(os.stat(d).st_mode)
            for f in files:
                p = os.path.join(d, f)
                with open(p) as fh:
                    out[os.path.relpath(p, root)] = (stat.S_IMODE(os.stat(p).st_mode), fh.read())
    return out


def test_env_files_inline_playbook_and_inventory_are_written_as_ansible_runner_writes_them(mesh, tmp_path):
    kw = dict(
        playbook=PLAYS,
        inventory={"all": {"hosts": {"localhost": {"ansible_connection": "local"}}}},
        extravars={"x": "from-extravars"},
        envvars={"RECEPTORD_T": "1"},
        passwords={"^SSH [pP]assword:\\s*?$": "secret"},
        settings={"idle_timeout": 600},
        cmdline="--diff",
    )
    lr, rr = both(mesh, tmp_path, **kw)
    assert (rr.status, rr.rc) == (lr.status, lr.rc) == ("successful", 0)
    loc, rem = listing(lr.config.private_data_dir), listing(rr.config.private_data_dir)
    assert rem == loc
    assert sorted(k for k in rem if k.startswith("env/")) == [f"env/{k}" for k in sorted(
        ["cmdline", "envvars", "extravars", "passwords", "settings"])]
    assert rem["env/extravars"] == (0o600, json.dumps({"x": "from-extravars"}))
    oks = [e for e in rr.events if e["event"] == "runner_on_ok"]
    assert oks[0]["event_data"]["res"]["msg"] == "x=from-extravars"
    assert rr.config.env["RECEPTORD_T"] == "1" and lr.config.env["RECEPTORD_T"] == "1"


def test_suppress_env_files_writes_none_and_still_passes_the_values(mesh, tmp_path):
    lr, rr = both(mesh, tmp_path, playbook=PLAYS, extravars={"x": "kw"}, suppress_env_files=True)
    for r in (lr, rr):
        assert r.status == "successful"
        assert not os.path.exists(os.path.join(r.config.private_data_dir, "env", "extravars"))
        assert [e["event_data"]["res"]["msg"] for e in r.events if e["event"] == "runner_on_ok"] == ["x=kw"]


def test_idents_modes_and_artifacts_as_ansible_runner(mesh, tmp_path):
    # The explicit default process_isolation=False, and container keywords that only
    # matter with isolation, are accepted and without effect, as in ansible_runner.
    lr, rr = both(mesh, tmp_path, playbook="test.yml", process_isolation=False, container_image="some/image")
    for r in (lr, rr):
        assert str(uuid.UUID(r.config.ident, version=4)) == r.config.ident
        assert stat.S_IMODE(os.stat(r.config.artifact_dir).st_mode) == 0o700
        assert r.config.artifact_dir == os.path.join(r.config.private_data_dir, "artifacts", r.config.ident)
    assert sorted(os.listdir(rr.config.artifact_dir)) == sorted(os.listdir(lr.config.artifact_dir))
    with lr.stderr as a, rr.stderr as b:
        assert a.read() == b.read()


def test_runner_surface_is_ansible_runners(mesh, tmp_path):
    lr, rr = both(mesh, tmp_path, playbook="test.yml")
    names = [n for n in dir(lr) if not n.startswith("_")]
    local_only = {"kill_container", "handle_termination", "event_callback", "status_callback", "run",
                  "process_isolation_path_actual", "directory_isolation_cleanup", "last_stdout_update"}
    missing = [n for n in names if n not in local_only and not hasattr(rr, n)]
    assert missing == []
    for n in ("status", "rc", "canceled", "errored", "timed_out"):
        assert getattr(rr, n) == getattr(lr, n), n
    for n in ("ident", "private_data_dir", "artifact_dir", "project_dir", "fact_cache", "fact_cache_type",
              "playbook", "json_mode", "quiet", "command", "env", "cwd"):
        assert hasattr(rr.config, n), n


def test_missing_playbook_is_a_failed_runner_not_an_exception(mesh, tmp_path):
    lr, rr = both(mesh, tmp_path, playbook="nope.yml")
    assert (rr.status, rr.rc) == (lr.status, lr.rc) == ("failed", 1)
    with lr.stdout as a, rr.stdout as b:
        assert a.read() == b.read()


FACTS = "- hosts: all\n  gather_facts: false\n  tasks:\n    - set_fact:\n        color: blue\n        cacheable: true\n"


def test_fact_cache_comes_back_and_reads_as_in_ansible_runner(mesh, tmp_path):
    lr, rr = both(mesh, tmp_path, play=FACTS, playbook="test.yml")
    caches = []
    for r in (lr, rr):
        assert r.status == "successful"
        assert r.config.fact_cache == os.path.join(r.config.artifact_dir, "fact_cache")
        caches.append(sorted(os.listdir(r.config.fact_cache)))
        r.set_fact_cache("other", {"a": 1})
        assert r.get_fact_cache("other") == {"a": 1}
        assert r.get_fact_cache("nohost") == {}
    # The node's cache files came back with the artifacts, named as the local run names them
    # (ansible-core 2.19 wraps the facts in a __payload__ that records the play's path).
    assert caches[0] == caches[1] and caches[1]
    for name in caches[1]:
        facts = [json.loads(r.get_fact_cache(name)["__payload__"]) for r in (lr, rr)]
        assert facts[0]["color"]["value"] == facts[1]["color"]["value"] == "blue"


def test_tags_and_timeout_are_honoured_by_the_node_as_locally(mesh, tmp_path):
    play = (
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - {debug: {msg: one}, tags: [a]}\n    - {debug: {msg: two}, tags: [b]}\n"
    )
    lr, rr = both(mesh, tmp_path, play=play, playbook="test.yml", tags="b")
    for r in (lr, rr):
        assert [e["event_data"]["res"]["msg"] for e in r.events if e["event"] == "runner_on_ok"] == ["two"]
    slow = "- hosts: all\n  gather_facts: false\n  tasks:\n    - command: sleep 30.5\n"
    lr, rr = both(mesh, tmp_path, runs=("loc2", "rem2"), play=slow, playbook="test.yml", timeout=3)
    assert (rr.status, rr.rc, rr.timed_out) == (lr.status, lr.rc, lr.timed_out) == ("timeout", 254, True)


def test_json_mode_output_and_stdout_file_match(mesh, tmp_path):
    outs = []
    for name, fn, extra in (("loc", ansible_runner.run, {}), ("rem", receptord.run,
                                                               dict(via_receptor="node2", receptor_peer=mesh))):
        buf = io.StringIO()
        with redirect_stdout(buf):
            r = fn(private_data_dir=make_pdd(tmp_path, name=name), playbook="test.yml", json_mode=True, **extra)
        with r.stdout as f:
            outs.append([shape(buf.getvalue()), shape(f.read())])
    assert outs[0] == outs[1]


def shape(text):
    """Each line: the event's name when it is a JSON event, else "text" (uuids, pids and
    times differ between any two runs)."""
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line)["event"])
        except (ValueError, KeyError, TypeError):
            out.append("text")
    return out


def test_run_async_returns_a_thread_and_a_runner_as_ansible_runner(mesh, tmp_path):
    lt, lr = ansible_runner.run_async(private_data_dir=make_pdd(tmp_path, name="loc"), playbook="test.yml", quiet=True)
    rt, rr = receptord.run_async(
        private_data_dir=make_pdd(tmp_path, name="rem"), playbook="test.yml", quiet=True,
        via_receptor="node2", receptor_peer=mesh,
    )
    assert isinstance(rt, threading.Thread) and isinstance(lt, threading.Thread)
    live = [e["event"] for e in rr.events]  # follows the run while it runs
    lt.join(300)
    rt.join(300)
    assert (rr.status, rr.rc) == (lr.status, lr.rc) == ("successful", 0)
    assert live == [e["event"] for e in rr.events]


def test_worker_keywords_travel_on_stdin_never_in_the_process_list(mesh, tmp_path, monkeypatch):
    import subprocess

    seen = []
    real = subprocess.Popen

    def recording(argv, *a, **k):
        seen.append(list(argv))
        return real(argv, *a, **k)

    monkeypatch.setattr(subprocess, "Popen", recording)
    secret = "kw-" + uuid.uuid4().hex
    (rr,) = both(mesh, tmp_path, runs=("rem",), playbook=PLAYS, extravars={"x": secret},
                 passwords={"^never asked$": secret}, suppress_env_files=True)
    assert rr.status == "successful"
    assert [e["event_data"]["res"]["msg"] for e in rr.events if e["event"] == "runner_on_ok"] == [f"x={secret}"]
    assert len(seen) == 1 and "--kwargs=-" in seen[0]
    assert not any(secret in arg for arg in seen[0]), seen[0]
