"""What receptord.run prints is what ansible_runner.run prints, byte for byte, for a job
that writes what is not an ansible event (tests/data/odd-output: stderr at start-up and at
exit, invalid UTF-8, text without a newline, CRLF, colour, a 100 KiB line). Each run is
its own Python process, so what is compared is the bytes on its stdout."""
import os
import shutil
import subprocess
import sys

from conftest import REPO

FIXTURE = os.path.join(REPO, "tests", "data", "odd-output")

CALL = """
import sys, {module}
r = {module}.run(private_data_dir=sys.argv[1], playbook="test.yml", ident="out", **{kwargs})
sys.exit(0 if r.rc == 0 and r.status == "successful" else 3)
"""


def printed(tmp_path, name, module, kwargs):
    pdd = os.path.join(str(tmp_path), name)
    shutil.copytree(FIXTURE, pdd)
    code = CALL.format(module=module, kwargs=repr(kwargs))
    r = subprocess.run([sys.executable, "-c", code, pdd], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    with open(os.path.join(pdd, "artifacts", "out", "stdout"), "rb") as f:
        assert f.read() == r.stdout, f"{name}: stdout artifact differs from what was printed"
    return r.stdout


def test_prints_exactly_what_ansible_runner_run_prints(mesh, tmp_path):
    local = printed(tmp_path, "local", "ansible_runner", {})
    assert b"sitecustomize: a warning line\r\n" in local and b"PLAY RECAP" in local
    remote = printed(tmp_path, "remote", "receptord", {"via_receptor": "node2", "receptor_peer": mesh})
    assert remote == local
