# shellcheck shell=bash disable=SC2154
# Sourced by run.sh once it has booted the Debian 11 (bullseye) root (glibc 2.31, systemd
# 247, Python 3.9; ansible-runner in /opt/ansible, see rootfs.sh): the shipped binaries'
# glibc floor, proven on a distribution older than the build host. The same .deb installs
# and its service starts; a `become` playbook runs through the service with `receptor run
# --via-receptor`; the wheel of `make wheel` installs into a virtualenv and runs one with
# `receptord.run`, through its own bundled `receptor`. Uses run.sh's helpers (ct, cin,
# check, wait_for, prop, listening, workers) and its $W, $deb, $whl.

check "the container's glibc is 2.31" test "$(ct getconf GNU_LIBC_VERSION)" = "glibc 2.31"
cp "$deb" "$W/root/root/receptord.deb"
cin "apt installs the .deb (Depends: libc6 (>= 2.17))" apt-get install -y -q /root/receptord.deb
cin "receptord --version runs" receptord --version
cin "receptor --version runs" receptor --version
cin "the unit is active (READY=1 received)" systemctl is-active -q receptord
check "STATUS= shows links and jobs" wait_for 15 status_text

PORT=$(free_port)
PEER="receptor://127.0.0.1:$PORT"
cat >"$W/root/etc/receptor.toml" <<TOML
[node]
id = "rtest"
data_dir = "/var/lib/receptor"
[[listeners]]
url = "$PEER"
[work.ansible_runner]
enabled = true
virtualenv = "/opt/ansible"
TOML
cin "systemctl reload" systemctl reload receptord
check "reload started the listener" wait_for 20 listening
check "reload registered the ansible-runner worker of /opt/ansible" wait_for 15 workers

mkdir -p "$W/root/root/pb/project" "$W/root/root/pb/inventory"
echo "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3" >"$W/root/root/pb/inventory/hosts"
cat >"$W/root/root/pb/project/floor.yml" <<'YML'
- hosts: localhost
  gather_facts: false
  become: true
  tasks:
    - name: write a file under /etc
      ansible.builtin.copy:
        dest: /etc/rtest-floor.conf
        content: "{{ tag }} on Debian {{ lookup('file', '/etc/debian_version') }}\n"
YML
floor_conf() { ct cat /etc/rtest-floor.conf | grep -qx "$1 on Debian 11\..*"; }
cin "receptor run --via-receptor runs the become playbook" \
  receptor run /root/pb -p floor.yml --via-receptor rtest --receptor-peer "$PEER" --cmdline "-e tag=run"
check "the playbook wrote /etc" floor_conf run

# The wheel: pip (Debian 11's, 20.3) takes the manylinux2014 tag on glibc 2.31.
cp "$whl" "$W/root/root/"
cat >"$W/root/root/floor_run.py" <<'PY'
import sys

import receptord
from receptord import _binary

assert _binary.find_binary() == _binary.BUNDLED, _binary.find_binary()
r = receptord.run(private_data_dir="/root/pb", playbook="floor.yml", via_receptor="rtest",
                  receptor_peer=sys.argv[1], extravars={"tag": "wheel"})
print(r.status, r.rc)
sys.exit(0 if (r.status, r.rc) == ("successful", 0) else 1)
PY
cin "a virtualenv for the wheel" python3 -m venv /root/wheelenv
cin "pip installs the wheel" /root/wheelenv/bin/pip install -q --disable-pip-version-check --no-index \
  --no-deps "/root/$(basename "$whl")"
cin "receptord.run runs the playbook through the service (bundled receptor)" \
  /root/wheelenv/bin/python /root/floor_run.py "$PEER"
check "receptord.run's playbook wrote /etc" floor_conf wheel
