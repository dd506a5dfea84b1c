"""receptord.run and friends: spawn `receptor run --events-stream`, read its JSON Lines,
call the handlers at ansible_runner's moments, return a Runner."""
import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from typing import Any, Dict, List, Optional, Tuple

from ._binary import find_binary
from ._kwargs import LOCAL, MESH_KWARGS, RUNNER_KWARGS, check_names, check_refused, new_ident, prepare, worker_kwargs
from .exceptions import BadOptionsError, ReceptordError, from_stream
from .runner import Runner, RunnerConfig

#: How often cancel_callback is polled while no line arrives (seconds).
POLL_INTERVAL = 0.1
#: Longest stream line accepted (a job event with its data); longer ones end the run.
MAX_LINE = 64 << 20
#: How many lines of the binary's stderr are kept for error messages.
STDERR_TAIL = 50
#: ansible_runner's rc for a canceled run.
CANCELED_RC = 254

def _argv(binary: str, kw: Dict[str, Any], pdd: str, ident: str) -> List[str]:
    a = [binary, "run", pdd, "--events-stream", f"--ident={ident}", "--kwargs=-"]
    mesh = []
    if kw.get("receptor_peer"):
        mesh += ["--receptor-peer", str(kw["receptor_peer"])]
    if kw.get("receptor_node_id"):
        mesh += ["--receptor-node-id", str(kw["receptor_node_id"])]
    if kw.get("tls_cert") or kw.get("tls_key"):
        mesh += ["--tls-cert", os.fspath(kw["tls_cert"]), "--tls-key", os.fspath(kw["tls_key"])]
    ca = kw.get("tls_ca")
    for c in [ca] if isinstance(ca, (str, os.PathLike)) else (ca or []):
        mesh += ["--tls-ca", os.fspath(c)]
    if kw.get("receptor_socket"):
        mesh += ["--socket", os.fspath(kw["receptor_socket"])]
    if kw.get("via_receptor"):
        a += ["--via-receptor", str(kw["via_receptor"])]
    if kw.get("json_mode"):
        a.append("--json")
    if kw.get("rotate_artifacts"):
        a.append(f"--rotate-artifacts={int(kw['rotate_artifacts'])}")
    if kw.get("lease"):
        a.append(f"--lease={int(kw['lease'])}s")
    return a[:2] + mesh + a[2:]


class _Run:
    """One run: the child process, its stream, the handlers."""

    def __init__(self, kw: Dict[str, Any], fn: str = "run"):
        check_names(kw, fn)
        check_refused(kw)
        kw = dict(kw)
        if kw.get("process_isolation") is False:
            kw.pop("process_isolation")
        self.pdd, kw = prepare(kw)
        self.ident = new_ident(kw)
        self.worker = worker_kwargs(kw, self.pdd, self.ident)
        self.kw = kw
        artifact_dir = os.path.join(self.pdd, "artifacts", self.ident)
        # As ansible_runner's BaseConfig: the run's artifact directory is private (0700).
        os.makedirs(artifact_dir, mode=0o700, exist_ok=True)
        config = {k: kw.get(k, v) for k, v in RUNNER_KWARGS.items() if not k.startswith("_") and k not in LOCAL}
        fact_cache_type = kw.get("fact_cache_type", "jsonfile")
        config.update(
            private_data_dir=self.pdd,
            ident=self.ident,
            artifact_dir=artifact_dir,
            project_dir=os.path.join(self.pdd, "project"),
            playbook=kw.get("playbook"),
            extra_vars=kw.get("extravars"),
            cmdline_args=kw.get("cmdline"),
            ssh_key_data=kw.get("ssh_key"),
            quiet=kw.get("quiet", False),
            rotate_artifacts=kw.get("rotate_artifacts", 0),
            fact_cache=os.path.join(artifact_dir, kw.get("fact_cache") or "fact_cache")
            if fact_cache_type == "jsonfile"
            else None,
            command=None,
            env=None,
            cwd=None,
        )
        config.update({k: kw.get(k) for k in MESH_KWARGS})
        self.runner = Runner(RunnerConfig(**config))
        for name in ("event_handler", "status_handler", "artifacts_handler", "cancel_callback", "finished_callback"):
            setattr(self.runner, name, kw.get(name))
        self.runner._cancel_requested = False
        self.runner._live = True  # until run() returns: Runner.events follows the run
        self.discarded: List[Tuple[int, str]] = []

    # -- handlers, called as ansible_runner calls them -------------------------------
    def _event(self, event: dict) -> None:
        handler = self.kw.get("event_handler")
        keep = True
        if handler is not None:
            # As ansible_runner: a falsy return value (None too) keeps the event out of job_events/.
            keep = bool(handler(event))
        if not keep and "counter" in event and "uuid" in event:
            self.discarded.append((event["counter"], event["uuid"]))

    def _output(self, text: str) -> None:
        # Exactly what ansible_runner's OutputEventFilter writes to sys.stdout, worked out
        # by `receptor run` from the events (src/runner/output.rs).
        if not self.kw.get("quiet"):
            sys.stdout.write(text)
            sys.stdout.flush()

    def _status(self, status: dict) -> None:
        self.runner.status = status.get("status", self.runner.status)
        if self.runner.status == "starting":
            # What ansible_runner's Processor keeps: the node's command, env and cwd.
            for key in ("command", "env", "cwd"):
                setattr(self.runner.config, key, status.get(key))
        handler = self.kw.get("status_handler")
        if handler is not None:
            handler(status, runner_config=self.runner.config)

    def _cancel_wanted(self) -> bool:
        if self.runner._cancel_requested:
            return True
        cb = self.kw.get("cancel_callback")
        try:
            return bool(cb()) if cb is not None else False
        except Exception:  # ansible_runner treats a failing cancel_callback as "cancel"
            return True

    # -- the child -------------------------------------------------------------------
    def run(self) -> Runner:
        try:
            return self._run()
        finally:
            self.runner._live = False

    def _run(self) -> Runner:
        argv = _argv(find_binary(), self.kw, self.pdd, self.ident)
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        # The worker's kwargs (passwords, ssh_key, ...) go through stdin, never argv.
        try:
            proc.stdin.write(json.dumps(self.worker).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        lines: "queue.Queue[Optional[bytes]]" = queue.Queue()
        stderr: deque = deque(maxlen=STDERR_TAIL)

        def pump_out():
            for raw in iter(lambda: proc.stdout.readline(MAX_LINE), b""):
                lines.put(raw)
            lines.put(None)

        def pump_err():
            for raw in iter(proc.stderr.readline, b""):
                stderr.append(raw.decode("utf-8", "replace").rstrip())

        threads = [threading.Thread(target=pump_out, daemon=True), threading.Thread(target=pump_err, daemon=True)]
        for t in threads:
            t.start()
        final: Optional[dict] = None
        signalled = False
        try:
            while True:
                try:
                    raw = lines.get(timeout=POLL_INTERVAL)
                except queue.Empty:
                    raw = b""
                if raw is None:
                    break
                if not signalled and self._cancel_wanted():
                    # The binary cancels and releases the remote work unit on SIGTERM.
                    proc.send_signal(signal.SIGTERM)
                    signalled = True
                if not raw:
                    continue
                line = self._parse(raw, proc)
                kind = line.get("type")
                if kind == "start":
                    self.runner.config.ident = line.get("ident")
                    self.runner.config.artifact_dir = line.get("artifact_dir")
                elif kind == "event":
                    self._event(line.get("event") or {})
                elif kind == "output":
                    self._output(line.get("text") or "")
                elif kind == "status":
                    self._status(line.get("status") or {})
                elif kind == "notice":
                    self.runner.unit = self.runner.unit or _unit(line.get("message", ""))
                elif kind == "artifacts":
                    self._discard()
                    handler = self.kw.get("artifacts_handler")
                    if handler is not None:
                        handler(line.get("artifact_dir"))
                elif kind in ("finished", "error"):
                    final = line
        except BaseException:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            raise
        finally:
            proc.wait()
            for t in threads:
                t.join(timeout=5)
            for pipe in (proc.stdout, proc.stderr):
                pipe.close()
        return self._finish(final, proc.returncode, signalled, list(stderr))

    def _parse(self, raw: bytes, proc) -> dict:
        try:
            line = json.loads(raw)
            if isinstance(line, dict):
                return line
        except ValueError:
            pass
        proc.kill()
        raise ReceptordError(
            f"{proc.args[0]} does not speak the events stream (is it receptord's receptor?): {raw[:200]!r}",
            "stream",
        )

    def _discard(self) -> None:
        """Events whose handler returned False are not kept, as in ansible_runner."""
        d = os.path.join(self.runner.artifact_dir, "job_events")
        for counter, uuid in self.discarded:
            try:
                os.unlink(os.path.join(d, f"{counter}-{uuid}.json"))
            except OSError:
                pass
        self.discarded.clear()

    def _finish(self, final: Optional[dict], code: int, signalled: bool, stderr: List[str]) -> Runner:
        r = self.runner
        if final is None:
            tail = "\n".join(stderr[-10:])
            raise BadOptionsError(tail or f"receptor exited with status {code} and no result", "bad_options")
        if final["type"] == "finished":
            r.status, r.rc = final.get("status", "unknown"), int(final.get("rc", 1))
            r.errored = r.status == "error"
            r.timed_out = r.status == "timeout"
            r.canceled = r.status == "canceled"
        elif final.get("kind") == "canceled" and signalled:
            r.status, r.rc, r.canceled = "canceled", CANCELED_RC, True
            self._status({"status": "canceled", "runner_ident": r.config.ident})
        else:
            r.status, r.rc, r.errored = "error", 1, True
            r.error = from_stream(final)
            raise r.error
        cb = self.kw.get("finished_callback")
        if cb is not None:
            cb(r)
        return r


def _unit(message: str) -> Optional[str]:
    words = message.split()
    if len(words) >= 5 and words[:4] == ["running", "as", "work", "unit"]:
        return words[4]
    return None


def run(**kwargs: Any) -> Runner:
    """Runs like ``ansible_runner.run(**kwargs)`` (2.4.3: the same keywords, defaults and
    files); with ``via_receptor``, on that mesh node. Also takes the mesh settings
    ``via_receptor, receptor_peer, receptor_node_id, tls_cert, tls_key, tls_ca,
    receptor_socket, lease``. An unknown keyword raises TypeError; one that cannot apply
    to a remote run raises BadOptionsError with the reason (docs/PYTHON.md). Returns a
    Runner (a failed playbook, a missing one included, is a Runner with status
    ``failed``); raises a ReceptordError subclass when the run could not complete."""
    return _Run(kwargs).run()


def run_async(**kwargs: Any) -> Tuple[threading.Thread, Runner]:
    """Like ``ansible_runner.run_async``: starts the run on a thread, returns (thread,
    runner) at once. The runner fills in as the run goes; an error is kept in
    ``runner.error`` (and ``runner.status`` is ``error``)."""
    r = _Run(kwargs, "run_async")

    def target():
        try:
            r.run()
        except ReceptordError:
            pass  # kept in runner.error

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, r.runner


async def arun(**kwargs: Any) -> Runner:
    """``await receptord.arun(...)``: the run on a thread of its own (not asyncio's
    default executor, so any number run at once); handlers are called on that thread.
    Cancelling the awaiting task cancels the remote job, then re-raises."""
    r = _Run(kwargs, "arun")
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def settle(result, error):
        if not fut.done():
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

    def target():
        try:
            result, error = r.run(), None
        except BaseException as e:  # handed to the awaiting task
            result, error = None, e
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the loop is gone

    threading.Thread(target=target, daemon=True).start()
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        r.runner._cancel_requested = True
        try:
            await fut
        except (ReceptordError, asyncio.CancelledError):
            pass
        raise


__all__ = ["run", "run_async", "arun"]
