"""receptord: ``ansible_runner.run(...)`` on a receptor mesh node.

    import receptord
    r = receptord.run(private_data_dir="pdd", playbook="site.yml",
                      via_receptor="node2", receptor_peer="receptor://ctl:8888")

Built on receptord's ``receptor run --events-stream`` (docs/EVENTS-STREAM.md)."""
from ._binary import find_binary
from ._run import arun, run, run_async
from .exceptions import (
    ArchiveRefusedError,
    BadOptionsError,
    BinaryNotFoundError,
    ConnectionLostError,
    IntegrityError,
    JobFailedError,
    JobRefusedError,
    NoWorkerError,
    PeerUnreachableError,
    ReceptordError,
    SignatureRefusedError,
    UnknownNodeError,
)
from .runner import Runner, RunnerConfig

__version__ = "0.1.0"
__all__ = [
    "run",
    "run_async",
    "arun",
    "find_binary",
    "Runner",
    "RunnerConfig",
    "ReceptordError",
    "BadOptionsError",
    "BinaryNotFoundError",
    "UnknownNodeError",
    "PeerUnreachableError",
    "ConnectionLostError",
    "JobRefusedError",
    "ArchiveRefusedError",
    "SignatureRefusedError",
    "NoWorkerError",
    "JobFailedError",
    "IntegrityError",
]
