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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ._binary import find_binary
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

_UNSUPPORTED = {
    "process_isolation": "isolation is the execution node's choice, not the client's",
    "project_dir": "absolute client paths mean nothing on the remote node",
    "artifact_dir": "artifacts are written under private_data_dir/artifacts/<ident>",
    "roles_path": "roles are resolved on the node; put them in the private data dir's project",
    "role": "put the play in the private data dir's project",
    "binary": "raw commands are not an ansible-runner run job",
    "container_image": "isolation is the execution node's choice, not the client's",
}


def _argv(binary: str, kw: Dict[str, Any]) -> List[str]:
    a = [binary, "run", os.fspath(kw["private_data_dir"]), "--events-stream"]
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
    flags = {
        "playbook": "--playbook",
        "module": "--module",
        "module_args": "--args",
        "host_pattern": "--hosts",
        "ident": "--ident",
        "inventory": "--inventory",
        "limit": "--limit",
        "cmdline": "--cmdline",
    }
    for key, flag in flags.items():
        v = kw.get(key)
        if v is not None:
            if key == "inventory" and not isinstance(v, (str, os.PathLike)):
                raise BadOptionsError("inventory must be a path inside the private data dir on a remote run")
            a.append(f"{flag}={os.fspath(v) if isinstance(v, os.PathLike) else v}")
    if kw.get("forks"):
        a.append(f"--forks={int(kw['forks'])}")
    if kw.get("json_mode"):
        a.append("--json")
    if kw.get("verbosity"):
        a.append("-" + "v" * max(1, min(int(kw["verbosity"]), 5)))
    for key in ("omit_event_data", "only_failed_event_data"):
        if kw.get(key):
            a.append("--" + key.replace("_", "-"))
    if kw.get("rotate_artifacts"):
        a.append(f"--rotate-artifacts={int(kw['rotate_artifacts'])}")
    if kw.get("extravars"):
        a.append("--extravars=" + json.dumps(kw["extravars"]))
    if kw.get("envvars"):
        a.append("--envvars=" + json.dumps({k: str(v) for k, v in kw["envvars"].items()}))
    if kw.get("lease"):
        a.append(f"--lease={int(kw['lease'])}s")
    if kw.get("timeout"):
        a.append(f"--timeout={int(kw['timeout'])}s")
    return a[:2] + mesh + a[2:]


class _Run:
    """One run: the child process, its stream, the handlers."""

    def __init__(self, kw: Dict[str, Any]):
        for key in kw:
            if key in _UNSUPPORTED:
                raise BadOptionsError(f"{key} is not supported on a remote run: {_UNSUPPORTED[key]}")
        if not kw.get("private_data_dir"):
            raise BadOptionsError("private_data_dir is required")
        self.kw = kw
        pdd = os.path.abspath(os.fspath(kw["private_data_dir"]))
        self.runner = Runner(
            RunnerConfig(
                private_data_dir=pdd,
                ident=kw.get("ident"),
                artifact_dir=os.path.join(pdd, "artifacts", str(kw.get("ident") or "")),
                playbook=kw.get("playbook"),
                module=kw.get("module"),
                module_args=kw.get("module_args"),
                host_pattern=kw.get("host_pattern"),
                limit=kw.get("limit"),
                forks=kw.get("forks"),
                verbosity=kw.get("verbosity"),
                extra_vars=kw.get("extravars"),
                envvars=kw.get("envvars"),
                via_receptor=kw.get("via_receptor"),
                receptor_peer=kw.get("receptor_peer"),
                receptor_node_id=kw.get("receptor_node_id"),
            )
        )
        self.runner._cancel_requested = False
        self.discarded: List[Tuple[int, str]] = []

    # -- handlers, called as ansible_runner calls them -------------------------------
    def _event(self, event: dict) -> None:
        handler = self.kw.get("event_handler")
        keep = True
        if handler is not None:
            keep = handler(event) is not False
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
        argv = _argv(find_binary(), self.kw)
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
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
        elif final.get("kind") == "canceled" and signalled:
            r.status, r.rc, r.canceled = "canceled", CANCELED_RC, True
            self._status({"status": "canceled", "runner_ident": r.config.ident})
        elif final.get("kind") == "canceled" and self.kw.get("timeout"):
            r.status, r.rc, r.timed_out = "timeout", CANCELED_RC, True
            self._status({"status": "timeout", "runner_ident": r.config.ident})
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


Handler = Optional[Callable[..., Any]]


def run(
    private_data_dir: Union[str, "os.PathLike[str]"] = None,
    playbook: Optional[str] = None,
    *,
    via_receptor: Optional[str] = None,
    receptor_peer: Optional[str] = None,
    receptor_node_id: Optional[str] = None,
    tls_cert: Optional[str] = None,
    tls_key: Optional[str] = None,
    tls_ca: Union[None, str, Sequence[str]] = None,
    **kwargs: Any,
) -> Runner:
    """Runs like ``ansible_runner.run(...)``; with ``via_receptor``, on that mesh node.

    Accepts ansible_runner.run's keyword names (private_data_dir, playbook, module,
    module_args, host_pattern, ident, inventory, limit, forks, verbosity, cmdline,
    extravars, envvars, quiet, json_mode, rotate_artifacts, omit_event_data,
    only_failed_event_data, event_handler, status_handler, artifacts_handler,
    finished_callback, cancel_callback), plus the mesh settings. Returns a Runner; raises
    a ReceptordError subclass when the run could not complete."""
    kw = dict(kwargs)
    kw.update(
        private_data_dir=private_data_dir,
        playbook=playbook,
        via_receptor=via_receptor,
        receptor_peer=receptor_peer,
        receptor_node_id=receptor_node_id,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
    )
    return _Run(kw).run()


def run_async(**kwargs: Any) -> Tuple[threading.Thread, Runner]:
    """Like ``ansible_runner.run_async``: starts the run on a thread, returns (thread,
    runner) at once. The runner fills in as the run goes; an error is kept in
    ``runner.error`` (and ``runner.status`` is ``error``)."""
    r = _Run(kwargs)

    def target():
        try:
            r.run()
        except ReceptordError:
            pass  # kept in runner.error

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, r.runner


async def arun(**kwargs: Any) -> Runner:
    """``await receptord.arun(...)``: the run on a worker thread; handlers are called on
    that thread. Cancelling the awaiting task cancels the remote job, then re-raises."""
    r = _Run(kwargs)
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(None, r.run)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        r.runner._cancel_requested = True
        try:
            await fut
        except ReceptordError:
            pass
        raise


__all__ = ["run", "run_async", "arun"]
