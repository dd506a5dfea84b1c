"""The Runner-like result of receptord.run: status, rc, and the artifacts read back the
way ansible_runner's Runner reads them (events, stdout, stats, host_events)."""
import json
import os
import re
from types import SimpleNamespace
from typing import Iterator, Optional

_EVENT_FILE = re.compile(r"^(\d+)-.*\.json$")


class RunnerConfig(SimpleNamespace):
    """The few RunnerConfig attributes handlers use: ident, private_data_dir, artifact_dir,
    playbook, module, ..., plus via_receptor and receptor_peer."""


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

    @property
    def artifact_dir(self) -> str:
        return self.config.artifact_dir

    @property
    def events(self) -> Iterator[dict]:
        """The job events as dicts, in counter order (artifacts/<ident>/job_events/)."""
        d = os.path.join(self.artifact_dir, "job_events")
        if not os.path.isdir(d):
            return
        numbered = []
        for name in os.listdir(d):
            m = _EVENT_FILE.match(name)
            if m:
                numbered.append((int(m.group(1)), name))
        for _, name in sorted(numbered):
            try:
                with open(os.path.join(d, name), encoding="utf-8") as f:
                    yield json.load(f)
            except (OSError, ValueError):
                continue

    @property
    def stdout(self):
        """The run's stdout file, opened for reading (as ansible_runner's Runner.stdout)."""
        path = os.path.join(self.artifact_dir, "stdout")
        if not os.path.exists(path):
            raise AttributeError(f"stdout file {path} does not exist")
        return open(path, "r", encoding="utf-8", errors="replace")

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
