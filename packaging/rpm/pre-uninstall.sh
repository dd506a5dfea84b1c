# RPM %preun (Fedora %systemd_preun): on removal (not upgrade) stop and disable the
# service, then stop the work units, which outlive the daemon by design (KillMode=process):
# SIGTERM to every process running /usr/bin/receptord, SIGKILL to what is left after 20 s.
if [ "$1" -eq 0 ]; then
    if command -v systemctl >/dev/null 2>&1; then
        systemctl --no-reload disable --now receptord.service >/dev/null 2>&1 || :
    fi
    receptord_pids() {
        for p in /proc/[0-9]*; do
            exe=$(readlink "$p/exe" 2>/dev/null) || continue
            case "$exe" in
                /usr/bin/receptord | "/usr/bin/receptord (deleted)") echo "${p#/proc/}" ;;
            esac
        done
    }
    pids=$(receptord_pids)
    if [ -n "$pids" ]; then
        kill -TERM $pids 2>/dev/null || :
        n=0
        while [ -n "$(receptord_pids)" ] && [ "$n" -lt 40 ]; do
            sleep 0.5
            n=$((n + 1))
        done
        pids=$(receptord_pids)
        [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || :
    fi
fi
