"""The Runner-like result of receptord.run: status, rc, and the artifacts read back the
way ansible_runner's Runner reads them (events, stdout, stats, host_events)."""
import json
import os
import re
import time
from types import SimpleNamespace
from typing import Any, Iterator, Optional

_EVENT_FILE = re.compile(r"^(\d+)-.*\.json$")


class RunnerConfig(SimpleNamespace):
    """ansible_runner's RunnerConfig attributes as the run was given them (every keyword of
    ansible_runner.run, under the attribute names RunnerConfig uses: extra_vars,
    cmdline_args, ssh_key_data, ...), the resolved ident, private_data_dir, artifact_dir,
    project_dir and fact_cache, the node's command, env and cwd (from the worker's
    ``starting`` status), plus the mesh settings (via_receptor, receptor_peer, ...)."""


class Runner:
    """What receptord.run returns; mirrors ansible_runner.Runner's reading side."""

    def __init__(self, config: RunnerConfig):
        self.config = config
        self.status = "unstarted"
        self.rc: Optional[int] = None
        self.errored = False
        self.canceled = False
        self.timed_out = False
        self.error = None  # the ReceptordError, when the run could not complete
        self.unit = None  # "NODE:UNIT" of the remote work unit, once known
        self.event_handler = self.status_handler = self.artifacts_handler = None
        self.cancel_callback = self.finished_callback = None
        self.remove_partials = True
        self._live = False  # True while the run's client process runs
        self.runner_mode = "pexpect"
        self.process_isolation = False
        self.directory_isolation_path = getattr(config, "directory_isolation_base_path", None)

    @property
    def artifact_dir(self) -> str:
        return self.config.artifact_dir

    def _collect(self, seen: set) -> Iterator[dict]:
        d = os.path.join(self.artifact_dir, "job_events")
        numbered = []
        for name in os.listdir(d):
            m = _EVENT_FILE.match(name)
            if m and "-partial" not in name and name not in seen:
                numbered.append((int(m.group(1)), name))
        for _, name in sorted(numbered):
            try:
                with open(os.path.join(d, name), encoding="utf-8") as f:
                    event = json.load(f)
            except (OSError, ValueError):
                break  # still being written: read it on the next pass
            seen.add(name)
            yield event

    @property
    def events(self) -> Iterator[dict]:
        """The job events as dicts, in counter order (artifacts/<ident>/job_events/); while
        the run is running, new ones as they arrive, as ansible_runner's Runner.events."""
        d = os.path.join(self.artifact_dir, "job_events")
        for _ in range(1200):  # as ansible_runner: wait up to 60 s for the directory
            if os.path.isdir(d) or not self._live:
                break
            time.sleep(0.05)
        if not os.path.isdir(d):
            return
        seen: set = set()
        while self._live:
            yield from self._collect(seen)
            time.sleep(0.05)
        yield from self._collect(seen)

    @property
    def stdout(self):
        """The run's stdout file, opened for reading (as ansible_runner's Runner.stdout)."""
        path = os.path.join(self.artifact_dir, "stdout")
        if not os.path.exists(path):
            raise AttributeError(f"stdout file {path} does not exist")
        return open(path, "r", encoding="utf-8", errors="replace")

    @property
    def stderr(self):
        """The run's stderr file, opened for reading (as ansible_runner's Runner.stderr)."""
        path = os.path.join(self.artifact_dir, "stderr")
        if not os.path.exists(path):
            raise AttributeError(f"stderr file {path} does not exist")
        return open(path, "r", encoding="utf-8", errors="replace")

    def _fact_path(self, host: str) -> str:
        if getattr(self.config, "fact_cache_type", "jsonfile") != "jsonfile":
            raise Exception(
                'Unsupported fact cache type.  Only "jsonfile" is supported for reading and writing facts from ansible-runner'
            )
        return os.path.join(self.config.fact_cache, host)

    def get_fact_cache(self, host: str) -> Any:
        """The host's facts from the run's jsonfile fact cache (artifacts/<ident>/fact_cache,
        brought back from the node with the artifacts); {} when there are none."""
        path = self._fact_path(host)
        if os.path.exists(path):
            with open(path) as f:
                return json.loads(f.read())
        return {}

    def set_fact_cache(self, host: str, data: Any) -> int:
        """Writes the host's facts into the run's jsonfile fact cache, as ansible_runner."""
        path = self._fact_path(host)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "w") as f:
            return f.write(json.dumps(data))

    @property
    def stats(self) -> Optional[dict]:
        """Per-host counts from the playbook_on_stats event, as ansible_runner gives them."""
        last = [e for e in self.events if e.get("event") == "playbook_on_stats"]
        if not last:
            return None
        data = last[0].get("event_data", {})
        keys = ("skipped", "ok", "dark", "failures", "ignored", "rescued", "processed", "changed")
        return {k: data.get(k, {}) for k in keys}

    def host_events(self, host: str) -> Iterator[dict]:
        """The events of one host."""
        return filter(lambda e: e.get("event_data", {}).get("host") == host, self.events)

    def cancel(self) -> None:
        """Asks the run to stop (as a cancel_callback returning True would)."""
        self._cancel_requested = True

    def __repr__(self) -> str:
        return f"<receptord.Runner ident={self.config.ident} status={self.status} rc={self.rc}>"
