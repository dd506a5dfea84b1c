"""Exceptions of receptord.run: one class per error kind of the events stream."""
from typing import List, Optional


class ReceptordError(Exception):
    """A run could not complete. ``kind`` is the stream's error kind (docs/EVENTS-STREAM.md)."""

    kind = "error"

    def __init__(self, message: str, kind: Optional[str] = None):
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind


class BinaryNotFoundError(ReceptordError):
    """No `receptor` binary: not bundled, $RECEPTORD_BIN unset, none on PATH."""

    kind = "binary_not_found"


class BadOptionsError(ReceptordError, ValueError):
    """The arguments were refused before anything ran (bad private data dir, ...)."""

    kind = "bad_options"


class UnknownNodeError(ReceptordError, LookupError):
    """``via_receptor`` names no node of the mesh; ``known_nodes`` lists the ones it has."""

    kind = "unknown_node"

    def __init__(self, message: str, known_nodes: Optional[List[str]] = None):
        super().__init__(message)
        self.known_nodes = list(known_nodes or [])


class PeerUnreachableError(ReceptordError, ConnectionError):
    """``receptor_peer`` could not be reached or joined (refused, TLS, identity)."""

    kind = "unreachable_peer"


class ConnectionLostError(ReceptordError, ConnectionError):
    """The mesh connection to the node was lost for longer than the lease allows."""

    kind = "connection"


class JobRefusedError(ReceptordError):
    """The node refused the job."""

    kind = "refused"


class ArchiveRefusedError(JobRefusedError):
    """The node refused the private data dir's archive (size, entries, unsafe paths)."""

    kind = "refused_archive"


class SignatureRefusedError(JobRefusedError):
    """The node requires signed work and the submission was not signed (or not validly)."""

    kind = "refused_signature"


class NoWorkerError(JobRefusedError):
    """The node has no ansible-runner worker."""

    kind = "no_worker"



class JobFailedError(ReceptordError):
    """The job failed on the executing node before its output was complete; the message is
    that node's own reason (a full disk on either side, the job process gone, its lease
    expired, ...)."""

    kind = "failed"


class IntegrityError(ReceptordError):
    """A relay tampered with the streams carrying the run ``limits.integrity_attempts``
    times in a row; the message names the failure and the path."""

    kind = "integrity"


_BY_KIND = {
    cls.kind: cls
    for cls in (
        BadOptionsError,
        UnknownNodeError,
        PeerUnreachableError,
        ConnectionLostError,
        JobRefusedError,
        ArchiveRefusedError,
        SignatureRefusedError,
        NoWorkerError,
        JobFailedError,
        IntegrityError,
    )
}


def from_stream(line: dict) -> ReceptordError:
    """The exception for a stream's ``{"type": "error", ...}`` line."""
    kind = str(line.get("kind", "error"))
    message = str(line.get("message", "unknown error"))
    if kind == "unknown_node":
        return UnknownNodeError(message, line.get("known_nodes"))
    cls = _BY_KIND.get(kind)
    if cls is None:
        return ReceptordError(message, kind)
    return cls(message)
