# RPM %postun (Fedora %systemd_postun_with_restart): restart on upgrade. RPM has no purge:
# /var/lib/receptor is kept.
if [ "$1" -ge 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl try-restart receptord.service >/dev/null 2>&1 || :
fi
