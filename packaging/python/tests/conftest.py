"""A real mesh of receptord daemons on 127.0.0.1 for the package's tests.

node1 (entry, no worker) - node2 (ansible-runner) - node3 (ansible-runner, verifies
signatures) ; node4 (ansible-runner, at most 1 archive entry) peers with node2."""
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
DAEMON = os.environ.get("RECEPTORD_DAEMON", os.path.join(REPO, "target", "release", "receptord"))
VENV_BIN = os.path.dirname(sys.executable)
RUNNER = os.path.join(VENV_BIN, "ansible-runner")

PLAY = textwrap.dedent(
    """\
    - hosts: all
      gather_facts: false
      tasks:
        - name: Say hello
          ansible.builtin.debug:
            msg: "hello {{ greeting | default('world') }}"
        - name: A short command
          ansible.builtin.command: "true"
          changed_when: false
    """
)
SLOW_PLAY = textwrap.dedent(
    """\
    - hosts: all
      gather_facts: false
      tasks:
        - name: Wait
          ansible.builtin.command: sleep 31.25
    """
)


def make_pdd(root, play=PLAY, name="pdd"):
    pdd = os.path.join(str(root), name)
    os.makedirs(os.path.join(pdd, "project"))
    os.makedirs(os.path.join(pdd, "inventory"))
    with open(os.path.join(pdd, "project", "test.yml"), "w") as f:
        f.write(play)
    with open(os.path.join(pdd, "inventory", "hosts"), "w") as f:
        f.write(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    return pdd


class Daemon:
    def __init__(self, workdir, node_id, peer_port=None, extra=""):
        self.node_id = node_id
        cfg = os.path.join(workdir, f"{node_id}.toml")
        text = f'[node]\nid = "{node_id}"\ndata_dir = "{workdir}/{node_id}"\n'
        text += '[[listeners]]\nurl = "receptor://127.0.0.1:0"\n'
        if peer_port:
            text += f'[[peers]]\nurl = "receptor://127.0.0.1:{peer_port}"\n'
        text += extra
        with open(cfg, "w") as f:
            f.write(text)
        self.log = os.path.join(workdir, f"{node_id}.log")
        with open(self.log, "wb") as err:
            env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
            self.proc = subprocess.Popen([DAEMON, "--config", cfg], stdout=subprocess.DEVNULL, stderr=err, env=env)
        self.port = self._bound_port()

    def _bound_port(self):
        for _ in range(200):
            with open(self.log, errors="replace") as f:
                m = re.search(r"listener bound.*addr=127\.0\.0\.1:(\d+)", f.read())
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        with open(self.log, errors="replace") as f:
            raise RuntimeError(f"{self.node_id} did not start: {f.read()}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def ansible(extra=""):
    return f'[work.ansible_runner]\npath = "{RUNNER}"\n{extra}'


@pytest.fixture(scope="session")
def mesh(tmp_path_factory):
    import receptord

    work = str(tmp_path_factory.mktemp("mesh"))
    private, public = os.path.join(work, "signing.pem"), os.path.join(work, "verify.pem")
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", private],
        check=True,
        capture_output=True,
    )
    subprocess.run(["openssl", "pkey", "-pubout", "-in", private, "-out", public], check=True, capture_output=True)
    nodes = []
    try:
        n1 = Daemon(work, "node1", extra="[work.ansible_runner]\nenabled = false\n")
        nodes.append(n1)
        n2 = Daemon(work, "node2", n1.port, ansible())
        nodes.append(n2)
        verify = ansible("verify_signature = true\n") + f'[work.verification]\npublic_key = "{public}"\n'
        nodes.append(Daemon(work, "node3", n2.port, verify))
        nodes.append(Daemon(work, "node4", n2.port, ansible("max_archive_entries = 1\n")))
        peer = f"receptor://127.0.0.1:{n1.port}"
        binary = receptord.find_binary()
        for node in ("node2", "node3", "node4"):
            for _ in range(100):
                r = subprocess.run(
                    [binary, "--receptor-peer", peer, "ping", node, "-c", "1", "--timeout", "1s"],
                    capture_output=True,
                )
                if r.returncode == 0:
                    break
            else:
                raise RuntimeError(f"{node} not reachable from node1")
        yield peer
    finally:
        for n in nodes:
            n.stop()


@pytest.fixture
def pdd(tmp_path):
    return make_pdd(tmp_path)


@pytest.fixture
def local_pdd(tmp_path):
    return make_pdd(tmp_path, name="local")


def which_runner_ok():
    return shutil.which("ansible-playbook") is not None
