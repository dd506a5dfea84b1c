# RPM %preun (Fedora %systemd_preun): stop and disable on removal, not on upgrade.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable --now receptord.service >/dev/null 2>&1 || :
fi
