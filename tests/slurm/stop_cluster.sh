#!/usr/bin/env bash
# Stop the daemons that start_cluster.sh started, by the pids it recorded.
#
# Usage: tests/slurm/stop_cluster.sh STATE_DIR
#
# Cancels the cluster's jobs, sends SIGTERM to each pid in STATE_DIR/pids whose process still
# has the recorded name, waits up to 10 s for all of them, then sends SIGKILL. Leaves /etc/slurm
# as start_cluster.sh found it. Safe to run twice.
set -uo pipefail

readonly MARKER="# Written by tina tests/slurm/start_cluster.sh"

# True if pid is a live (not zombie) process named name.
is_running() {
    local name=$1 pid=$2 stat
    [[ -r /proc/$pid/comm && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] || return 1
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    [[ ${stat##*) } != Z* ]]
}

# Cancel the cluster's jobs and wait up to 15 s for them to end: a job left running when slurmd
# stops would outlive it in its slurmstepd processes.
cancel_jobs() {
    scontrol ping >/dev/null 2>&1 || return 0
    scancel --user=root >/dev/null 2>&1 || true
    for _ in $(seq 150); do
        [[ -z "$(squeue --noheader --states=PD,CF,R,CG,S 2>/dev/null)" ]] && return 0
        sleep 0.1
    done
    echo "jobs still active after 15 s:" >&2
    squeue >&2
}

stop_daemons() {
    local pids_file=$1/pids name pid
    [[ -f $pids_file ]] || return 0
    local -a names=() pids=()
    while read -r name pid; do
        is_running "$name" "$pid" || continue
        names+=("$name")
        pids+=("$pid")
        kill -TERM "$pid"
    done <"$pids_file"
    for _ in $(seq 100); do
        local alive=0 i
        for i in "${!pids[@]}"; do
            is_running "${names[$i]}" "${pids[$i]}" && alive=1
        done
        ((alive)) || break
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        if is_running "${names[$i]}" "${pids[$i]}"; then
            kill -KILL "${pids[$i]}"
            echo "killed ${names[$i]} (${pids[$i]}) after 10 s"
        else
            echo "stopped ${names[$i]} (${pids[$i]})"
        fi
    done
    rm -f "$pids_file"
}

# Remove the files that start_cluster.sh wrote to /etc/slurm and put back those it set aside.
# A slurm.conf naming a controller that is down makes each `snakemake` start 9 s slower: the
# SLURM executor plugin runs `scontrol show config` when it is loaded, and that call waits.
restore_configs() {
    local name target
    for name in slurm.conf gres.conf; do
        target=/etc/slurm/$name
        if [[ -f $target ]] && grep -qF "$MARKER" "$target"; then
            rm -f "$target"
        fi
        if [[ -f $target.before-tina ]]; then
            mv "$target.before-tina" "$target"
            echo "restored the earlier $target"
        fi
    done
}

forget_cluster() {
    local current=/run/tina-slurm-test-cluster
    [[ -f $current && "$(cat "$current")" == "$1" ]] && rm -f "$current"
    return 0
}

[[ $# -eq 1 ]] || { echo "usage: stop_cluster.sh STATE_DIR" >&2; exit 1; }
STATE="$(cd "$1" 2>/dev/null && pwd)" || { echo "no folder $1" >&2; exit 1; }
cancel_jobs
stop_daemons "$STATE"
restore_configs
forget_cluster "$STATE"
