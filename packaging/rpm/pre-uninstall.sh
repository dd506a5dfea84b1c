# RPM %preun (Fedora %systemd_preun): on removal (not upgrade) stop and disable the
# service, then stop the work units, which outlive the daemon by design (KillMode=process):
# SIGTERM to this service's remaining processes, SIGKILL to what is left after 20 s.
if [ "$1" -eq 0 ]; then
    if command -v systemctl >/dev/null 2>&1; then
        systemctl --no-reload disable --now receptord.service >/dev/null 2>&1 || :
    fi
    # This service's processes only: what is left in its cgroup after the stop (the unit
    # supervisors; KillMode=process keeps them there), and, where systemd is not running,
    # the supervisors of units under this package's data dir, in this mount namespace (not
    # in a container), running this package's binary. Hand-started daemons, daemons in
    # containers and their units are not touched.
    # This service's processes only: the unit supervisors (`receptord --supervise-unit
    # <data_dir>/units/<ID>`, this package's binary, in this mount namespace: not in a
    # container) that are in the service's cgroup or supervise a unit under this package's
    # data dir (a host without systemd), and at the end whatever else is left in the
    # service's cgroup. Hand-started daemons, daemons in containers and their units are
    # not touched.
    service_pids() {
        cg=$(systemctl show -P ControlGroup receptord.service 2>/dev/null) || cg=
        [ -n "$cg" ] || return 0
        for f in "/sys/fs/cgroup$cg/cgroup.procs" "/sys/fs/cgroup/systemd$cg/cgroup.procs"; do
            if [ -r "$f" ]; then
                cat "$f"
                return 0
            fi
        done
    }
    unit_supervisors() {
        data=$(sed -n 's/^[[:space:]]*data_dir[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' /etc/receptor.toml 2>/dev/null | head -n 1)
        data=${data:-/var/lib/receptor}
        ns=$(readlink /proc/self/ns/mnt)
        ours=" $(service_pids | tr '\n' ' ') "
        for p in /proc/[0-9]*; do
            [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$ns" ] || continue
            exe=$(readlink "$p/exe" 2>/dev/null) || continue
            case "$exe" in
                /usr/bin/receptord | "/usr/bin/receptord (deleted)") ;;
                *) continue ;;
            esac
            pid=${p#/proc/}
            tr '\0' '\n' <"$p/cmdline" 2>/dev/null | {
                read -r _ && read -r flag && read -r dir || exit 0
                [ "$flag" = "--supervise-unit" ] || exit 0
                case "$ours" in *" $pid "*) echo "$pid"; exit 0 ;; esac
                case "$dir" in "$data"/*) echo "$pid" ;; esac
            }
        done
    }
    # SIGTERM to a supervisor stops its unit's whole job tree (the unit ends Failed,
    # "Killed"); after 20 s, SIGKILL to what is left of them and of the service's cgroup.
    pids=$(unit_supervisors)
    if [ -n "$pids" ]; then
        echo "receptord: stopping running work units" >&2
        kill -TERM $pids 2>/dev/null || :
        n=0
        while [ -n "$(unit_supervisors)" ] && [ "$n" -lt 40 ]; do
            sleep 0.5
            n=$((n + 1))
        done
    fi
    pids=$( (unit_supervisors; service_pids) | sort -u)
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || :
fi
