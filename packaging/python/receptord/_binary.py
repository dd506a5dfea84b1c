"""Finds the `receptor` binary: $RECEPTORD_BIN, the one bundled in the wheel, or PATH."""
import os
import shutil

from .exceptions import BinaryNotFoundError

BUNDLED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", "receptor")


def find_binary() -> str:
    env = os.environ.get("RECEPTORD_BIN")
    if env:
        if not os.access(env, os.X_OK):
            raise BinaryNotFoundError(f"RECEPTORD_BIN={env} is not an executable file")
        return env
    if os.access(BUNDLED, os.X_OK):
        return BUNDLED
    found = shutil.which("receptor")
    if found:
        return found
    raise BinaryNotFoundError(
        "no receptor binary: this install carries none (a wheel from `make wheel` does); "
        "set RECEPTORD_BIN to receptord's `receptor`, or put it on PATH"
    )
