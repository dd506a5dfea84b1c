# RPM %pre: create the service user (sysusers when available).
if command -v systemd-sysusers >/dev/null 2>&1; then
    echo 'u receptor - "receptor mesh node" /var/lib/receptor /usr/sbin/nologin' | systemd-sysusers -
elif ! getent passwd receptor >/dev/null; then
    useradd --system --home-dir /var/lib/receptor --shell /usr/sbin/nologin receptor
fi
