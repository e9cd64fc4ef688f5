#!/usr/bin/env bash
# Start a one-node SLURM cluster on localhost for tests/test_slurm.py.
#
# Usage: tests/slurm/start_cluster.sh STATE_DIR
#
# Installs Debian's slurm-wlm and munge when missing, writes /etc/slurm/slurm.conf and gres.conf
# from the templates here (a job's inner srun reads that path: the jobstep drops SLURM_CONF), and
# starts munged, slurmctld and slurmd. State, logs and pid files go to STATE_DIR; the pids of the
# daemons this script started are listed in STATE_DIR/pids ("name pid" per line) for
# stop_cluster.sh. A cluster that an earlier run left up is stopped first. Must run as root.
# Exits non-zero, with the daemons' logs, if the node does not come up idle within 30 s.
set -euo pipefail

readonly HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly CONF_DIR=/etc/slurm
readonly MARKER="# Written by tina tests/slurm/start_cluster.sh"
# Names the STATE_DIR of the cluster now up, so that a start after a crash stops its daemons.
readonly CURRENT=/run/tina-slurm-test-cluster
readonly -a AS_MUNGE=(setpriv --reuid=munge --regid=munge --init-groups)

die() {
    echo "start_cluster.sh: $*" >&2
    exit 1
}

install_packages() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return 0
    local start=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends slurm-wlm munge >"$STATE/apt.log" 2>&1; then
        apt-get update >>"$STATE/apt.log" 2>&1
        apt-get install -y --no-install-recommends slurm-wlm munge >>"$STATE/apt.log" 2>&1 ||
            die "apt-get install slurm-wlm munge failed, see $STATE/apt.log"
    fi
    echo "installed slurm-wlm and munge in $((SECONDS - start)) s"
}

# Fill in a template from this folder and write it to /etc/slurm, setting aside a file there
# that start_cluster.sh did not write (stop_cluster.sh puts it back).
write_config() {
    local name=$1 host=$2 hardware=$3
    local target=$CONF_DIR/$name
    if [[ -f $target ]] && ! grep -qF "$MARKER" "$target"; then
        cp -p "$target" "$target.before-tina"
        echo "kept the existing $target as $target.before-tina"
    fi
    sed -e "s|@HOST@|$host|g" -e "s|@STATE@|$STATE|g" -e "s|@HARDWARE@|$hardware|" \
        "$HERE/$name.in" >"$target.tmp"
    mv "$target.tmp" "$target"
}

write_configs() {
    mkdir -p "$CONF_DIR" "$STATE/slurmctld" "$STATE/slurmd"
    local host hardware
    host="$(hostname -s)"
    # "CPUs=2 Boards=1 ... RealMemory=24105" as this machine reports it.
    hardware="$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //')"
    write_config slurm.conf "$host" "$hardware"
    write_config gres.conf "$host" "$hardware"
}

start_munge() {
    if munge -n </dev/null >/dev/null 2>&1; then
        echo "munged is already running; using it"
        return 0
    fi
    [[ -f /etc/munge/munge.key ]] || "${AS_MUNGE[@]}" mungekey --create
    install -d -o munge -g munge -m 0755 /run/munge
    "${AS_MUNGE[@]}" munged --foreground </dev/null >>"$STATE/munged.log" 2>&1 &
    echo "munged $!" >>"$STATE/pids"
    for _ in $(seq 50); do
        munge -n </dev/null >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munged did not start, see $STATE/munged.log"
}

stop_previous_cluster() {
    [[ -f $CURRENT ]] || return 0
    echo "stopping the test cluster of an earlier run ($(cat "$CURRENT"))"
    bash "$HERE/stop_cluster.sh" "$(cat "$CURRENT")"
}

start_slurm() {
    slurmctld -D -i </dev/null >>"$STATE/slurmctld.out" 2>&1 &
    echo "slurmctld $!" >>"$STATE/pids"
    slurmd -D </dev/null >>"$STATE/slurmd.out" 2>&1 &
    echo "slurmd $!" >>"$STATE/pids"
}

wait_for_idle_node() {
    local state=""
    for _ in $(seq 300); do
        state="$(sinfo --noheader --format=%T 2>/dev/null | head -n 1 || true)"
        [[ $state == idle ]] && return 0
        [[ $state == inval || $state == drain* ]] && break
        sleep 0.1
    done
    tail -n 20 "$STATE"/*.log "$STATE"/*.out >&2 || true
    die "the node is '$state', not idle; see the logs above"
}

main() {
    [[ $# -eq 1 ]] || die "usage: start_cluster.sh STATE_DIR"
    [[ $EUID -eq 0 ]] || die "must run as root (it writes $CONF_DIR and starts daemons)"
    STATE="$(mkdir -p "$1" && cd "$1" && pwd)"
    local start=$SECONDS
    stop_previous_cluster
    if [[ -f $CONF_DIR/slurm.conf ]] && scontrol ping >/dev/null 2>&1; then
        die "a SLURM controller already answers ($CONF_DIR/slurm.conf); not starting a second"
    fi
    : >"$STATE/pids"
    echo "$STATE" >"$CURRENT"
    install_packages
    write_configs
    start_munge
    start_slurm
    wait_for_idle_node
    echo "one-node SLURM cluster up in $((SECONDS - start)) s; pids in $STATE/pids"
}

main "$@"
