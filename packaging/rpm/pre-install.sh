# RPM %pre: the `receptor` user (hop profile; control socket group), once, with
# systemd-sysusers when available.
if ! getent passwd receptor >/dev/null; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        echo 'u receptor - "receptor mesh node" /var/lib/receptor /usr/sbin/nologin' | systemd-sysusers -
    else
        useradd --system --user-group --home-dir /var/lib/receptor --no-create-home \
            --shell /usr/sbin/nologin receptor
    fi
fi
