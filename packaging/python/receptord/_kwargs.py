"""ansible_runner.run's keywords (ansible-runner 2.4.3): which exist, their defaults, what
each becomes on a remote run (kept here, written into the private data dir, sent to the
node's worker in the kwargs line, or refused with the reason), and the files a local
``ansible_runner.run`` writes into the private data dir before it runs."""
import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Dict, Tuple

from .exceptions import BadOptionsError

#: Every keyword ``ansible_runner.run`` accepts (2.4.3: init_runner, dump_artifacts,
#: RunnerConfig, BaseConfig), with its default.
RUNNER_KWARGS: Dict[str, Any] = {
    # init_runner
    "debug": None,
    "logfile": None,
    "ignore_logging": True,
    "event_handler": None,
    "status_handler": None,
    "artifacts_handler": None,
    "cancel_callback": None,
    "finished_callback": None,
    "streamer": None,
    "_input": None,
    "_output": None,
    # dump_artifacts (role_vars, hosts and role_skip_facts only with role)
    "role": None,
    "role_vars": None,
    "hosts": "all",
    "role_skip_facts": False,
    # RunnerConfig
    "private_data_dir": None,
    "playbook": None,
    "inventory": None,
    "roles_path": None,
    "limit": None,
    "module": None,
    "module_args": None,
    "verbosity": None,
    "host_pattern": None,
    "binary": None,
    "extravars": None,
    "suppress_output_file": False,
    "suppress_ansible_output": False,
    "process_isolation_path": None,
    "process_isolation_hide_paths": None,
    "process_isolation_show_paths": None,
    "process_isolation_ro_paths": None,
    "tags": None,
    "skip_tags": None,
    "directory_isolation_base_path": None,
    "forks": None,
    "cmdline": None,
    "omit_event_data": False,
    "only_failed_event_data": False,
    # BaseConfig
    "host_cwd": None,
    "envvars": None,
    "passwords": None,
    "settings": None,
    "project_dir": None,
    "artifact_dir": None,
    "fact_cache_type": "jsonfile",
    "fact_cache": None,
    "process_isolation": False,
    "process_isolation_executable": None,
    "container_image": "",
    "container_volume_mounts": None,
    "container_options": None,
    "container_workdir": None,
    "container_auth_data": None,
    "ident": None,
    "rotate_artifacts": 0,
    "timeout": None,
    "ssh_key": None,
    "quiet": False,
    "json_mode": False,
    "check_job_event_data": False,
    "suppress_env_files": False,
    "keepalive_seconds": None,
}

#: receptord's own keywords: where and how the run reaches its node.
MESH_KWARGS = (
    "via_receptor",
    "receptor_peer",
    "receptor_node_id",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "receptor_socket",
    "lease",
)

#: Keywords handled on this side (never sent to the worker as such).
LOCAL = {
    "debug",
    "logfile",
    "ignore_logging",
    "event_handler",
    "status_handler",
    "artifacts_handler",
    "cancel_callback",
    "finished_callback",
    "private_data_dir",
    "ident",
    "quiet",
    "rotate_artifacts",
    "role",
    "role_vars",
    "hosts",
    "role_skip_facts",
}

#: Without process_isolation, ansible_runner ignores these; so does a remote run.
ISOLATION_ONLY = {
    "process_isolation_executable",
    "process_isolation_path",
    "process_isolation_hide_paths",
    "process_isolation_show_paths",
    "process_isolation_ro_paths",
    "container_image",
    "container_volume_mounts",
    "container_options",
    "container_workdir",
    "container_auth_data",
}

#: Refused when given a value other than the default, with the reason.
REFUSED = {
    "process_isolation": "isolation is the execution node's choice, not the client's "
    "(configure it on the node); process_isolation=False is accepted",
    "artifact_dir": "artifacts are written under private_data_dir/artifacts/<ident>, "
    "the only place a remote run's artifacts come back to",
    "project_dir": "a client path means nothing on the node; the node runs "
    "private_data_dir/project",
    "host_cwd": "a client path means nothing on the node",
    "streamer": "receptord is the transmit/worker/process pipeline; use ansible_runner "
    "itself for a streamer step",
    "_input": "receptord is the transmit/worker/process pipeline",
    "_output": "receptord is the transmit/worker/process pipeline",
}


def check_names(kw: Mapping, fn: str = "run") -> None:
    """Unknown keywords raise TypeError, as ansible_runner's RunnerConfig does."""
    for key in kw:
        if key not in RUNNER_KWARGS and key not in MESH_KWARGS:
            raise TypeError(f"{fn}() got an unexpected keyword argument {key!r}")
    if "role" not in kw:
        # dump_artifacts only consumes these for a role; otherwise RunnerConfig refuses them.
        for key in ("role_vars", "hosts", "role_skip_facts"):
            if key in kw:
                raise TypeError(f"{fn}() got an unexpected keyword argument {key!r}")


def check_refused(kw: Mapping) -> None:
    for key, reason in REFUSED.items():
        if kw.get(key, RUNNER_KWARGS[key]) != RUNNER_KWARGS[key]:
            raise BadOptionsError(f"{key} is not supported on a remote run: {reason}")


def _write(text: str, directory: str, name: str) -> str:
    """Writes `text` to directory/name (0600; the directory 0700 when created) unless it
    already holds exactly that, as ansible_runner's dump_artifact."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, name)
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return path
    except OSError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)
    return path


def _is_plays(obj: Any) -> bool:
    """A playbook given as data (ansible_runner's isplaybook): any iterable but a string
    or a mapping."""
    return isinstance(obj, Iterable) and not isinstance(obj, (str, bytes, MutableMapping))


def prepare(kw: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """What ansible_runner.run does before it runs: the private data dir (a new temporary
    one when none is given), a role turned into a play, an inline playbook into
    project/main.json, inventory text or data into inventory/, and (unless
    suppress_env_files) envvars, extravars, passwords, settings, ssh_key, cmdline into
    env/. Returns the private data dir and the kwargs left, in place."""
    pdd = kw.get("private_data_dir")
    if not pdd:
        pdd = tempfile.mkdtemp()
    pdd = os.path.abspath(os.fspath(pdd))
    if not os.path.exists(pdd):
        # ansible_runner's ValueError, word for word (BadOptionsError is a ValueError).
        raise BadOptionsError("private_data_dir path is either invalid or does not exist")
    kw["private_data_dir"] = pdd
    if "role" in kw:
        role: Dict[str, Any] = {"name": kw.pop("role")}
        if "role_vars" in kw:
            role["vars"] = kw.pop("role_vars")
        play: Dict[str, Any] = {"hosts": kw.pop("hosts", "all"), "roles": [role]}
        if kw.pop("role_skip_facts", False):
            play["gather_facts"] = False
        kw["playbook"] = [play]
        envvars = dict(kw.get("envvars") or {})
        roles_path = kw.pop("roles_path", None)
        roles = os.path.join(pdd, "roles")
        envvars["ANSIBLE_ROLES_PATH"] = f"{roles_path}:{roles}" if roles_path else roles
        kw["envvars"] = envvars
    playbook = kw.get("playbook")
    if isinstance(playbook, MutableMapping):
        playbook = [playbook]
    if playbook and _is_plays(playbook):
        kw["playbook"] = _write(json.dumps(list(playbook)), os.path.join(pdd, "project"), "main.json")
    inv = kw.get("inventory")
    if inv and isinstance(inv, (MutableMapping, str)):
        inv_dir = os.path.join(pdd, "inventory")
        if isinstance(inv, MutableMapping):
            kw["inventory"] = _write(json.dumps(inv), inv_dir, "hosts.json")
        elif not os.path.exists(os.path.join(inv_dir, inv)):
            kw["inventory"] = _write(inv, inv_dir, "hosts")
        elif not os.path.isabs(inv):
            kw["inventory"] = os.path.join(inv_dir, inv)
    if not kw.get("suppress_env_files", False):
        env = os.path.join(pdd, "env")
        for key in ("envvars", "extravars", "passwords", "settings", "ssh_key", "cmdline"):
            obj = kw.get(key)
            if obj and not os.path.exists(os.path.join(env, key)):
                text = str(obj) if key in ("ssh_key", "cmdline") else json.dumps(obj)
                _write(text, env, key)
                kw.pop(key)
    return pdd, kw


def new_ident(kw: Mapping) -> str:
    """The run's ident: the one given (as a string), else a new uuid4, as ansible_runner."""
    ident = kw.get("ident")
    return str(uuid.uuid4()) if ident is None else str(ident)


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([os.path.abspath(path), root]) == root


def worker_kwargs(kw: Mapping, pdd: str, ident: str) -> Dict[str, Any]:
    """The kwargs line for the node's worker, as ``ansible-runner transmit`` would send it:
    paths into the private data dir made relative to it, local-only keywords left out."""
    out: Dict[str, Any] = {}
    project = os.path.join(pdd, "project")
    for key, value in kw.items():
        if key in LOCAL or key in MESH_KWARGS or key in ISOLATION_ONLY or key in REFUSED:
            continue
        if value == RUNNER_KWARGS.get(key, object()) and key not in ("json_mode",):
            continue
        out[key] = value
    pb = out.get("playbook")
    if isinstance(pb, (str, os.PathLike)) and os.path.isabs(os.fspath(pb)):
        pb = os.fspath(pb)
        if not _inside(pb, project):
            raise BadOptionsError(f"playbook {pb} is outside {project}: the node cannot read it")
        out["playbook"] = os.path.relpath(pb, project)
    inv = out.get("inventory")
    if inv is not None:
        many = isinstance(inv, (list, tuple))
        rel = []
        for item in inv if many else [inv]:
            item = os.fspath(item)
            if os.path.isabs(item):
                if not _inside(item, pdd):
                    raise BadOptionsError(f"inventory {item} is outside the private data dir: the node cannot read it")
                item = os.path.relpath(item, pdd)
            rel.append(item)
        if many and len(rel) > 1:
            raise BadOptionsError(
                "a list of several inventories cannot be sent: ansible-runner's worker takes one "
                "inventory path (it joins it onto its private data dir); use a directory of them"
            )
        # One path as the worker takes it; [] (no inventory at all) as it is.
        out["inventory"] = rel[0] if rel else []
    roles = (out.get("envvars") or {}).get("ANSIBLE_ROLES_PATH")
    if isinstance(roles, str) and os.path.isabs(roles) and roles.startswith(pdd):
        out["envvars"] = dict(out["envvars"], ANSIBLE_ROLES_PATH=os.path.relpath(roles, pdd))
    rp = out.get("roles_path")
    if rp is not None:
        paths = rp if isinstance(rp, (list, tuple)) else [rp]
        for p in paths:
            if os.path.isabs(os.fspath(p)) and not _inside(os.fspath(p), pdd):
                raise BadOptionsError(f"roles_path {p} is outside the private data dir: the node cannot read it")
    if "forks" in out and out["forks"] is not None:
        out["forks"] = int(out["forks"])
    out["ident"] = ident
    return out
