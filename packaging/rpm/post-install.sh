# RPM %post (Fedora %systemd_post): directories, then presets decide whether the unit is
# enabled on first install; upgrades leave that choice alone.
command -v systemd-tmpfiles >/dev/null 2>&1 && systemd-tmpfiles --create /usr/lib/tmpfiles.d/receptord.conf || :
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload preset receptord.service >/dev/null 2>&1 || :
fi
