#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try `hydra/launcher=slurm` / `slurm_ddp` and
# to test them (tests/e2e/test_slurm.py). Debian's munge and slurm-wlm; root only.
#
#   bash scripts/slurm_local.sh start    # install what is missing, start munged, slurmctld, slurmd
#   bash scripts/slurm_local.sh status   # the daemons and `sinfo`; exit 0 when the node is up
#   bash scripts/slurm_local.sh stop     # cancel the cluster's jobs, end what `start` started
#
# The configuration and the daemons' state and logs live in $PDL_SLURM_DIR
# (/var/lib/pdl-slurm): slurm.conf is written there from `hostname`, `nproc` and the
# machine's memory, and nothing under /etc is written. The daemons listen on 127.0.0.1 only:
# SLURM itself binds its ports on every interface (22.05 has no setting for it), so they run
# with a small LD_PRELOAD library, built here with the C compiler, that turns a bind to the
# wildcard address into one to the loopback address (without a compiler: every interface,
# and `start` says so). Jobs get it too (a TaskProlog exports LD_PRELOAD), for the ports srun
# opens for its tasks' I/O.
# slurmd runs "configless": it fetches slurm.conf from slurmctld and keeps a copy in
# /run/slurm/conf, where sbatch, srun, squeue, scontrol and scancel on this machine find it
# (no SLURM_CONF to export). munged is Debian's (its key /etc/munge/munge.key comes with the
# package); one already running is used and left alone. `start` is safe to run twice: it
# starts only what is not running. `stop` ends only the daemons it started (their pid files).
set -euo pipefail

DIR=${PDL_SLURM_DIR:-/var/lib/pdl-slurm}
CONF=$DIR/slurm.conf
CTLD_PORT=${PDL_SLURM_PORT:-6817} # slurmd listens on the next port
NODE=$(hostname -s)
SBIN=/usr/sbin
MUNGE_SOCKET=/run/munge/munge.socket.2

say() { echo "slurm_local.sh: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}

alive() { # alive PIDFILE NAME: the process of the pid file is running and is NAME
	local pid
	pid=$(cat "$1" 2>/dev/null) || return 1
	[[ -n $pid && -r /proc/$pid/comm ]] || return 1
	[[ $(cat "/proc/$pid/comm") == "$2"* ]]
}

install_missing() {
	local missing=()
	[[ -x $SBIN/munged ]] || missing+=(munge)
	if [[ ! -x $SBIN/slurmctld || ! -x $SBIN/slurmd ]] || ! command -v sbatch >/dev/null; then
		missing+=(slurm-wlm)
	fi
	((${#missing[@]})) || return 0
	command -v apt-get >/dev/null || die "${missing[*]} missing and no apt-get to install them (Debian/Ubuntu only)"
	say "installing ${missing[*]} (apt-get)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

write_conf() { # write_conf SHIM: the loopback library, or "" for none
	local cpus mem_mb prolog=""
	if [[ -n $1 ]]; then
		printf '#!/bin/sh\necho "export LD_PRELOAD=%s"\n' "$1" >"$DIR/task_prolog.sh"
		chmod 755 "$DIR/task_prolog.sh"
		prolog="TaskProlog=$DIR/task_prolog.sh"
	fi
	cpus=$(nproc)
	# 90% of the memory: slurmd refuses a node whose RealMemory is above what it finds.
	mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
	mkdir -p "$DIR/ctld" "$DIR/d"
	cat >"$CONF.new" <<EOF
# Written by scripts/slurm_local.sh: one node, $NODE, on 127.0.0.1.
ClusterName=pdl-local
# The address in parentheses differs from the name: slurmctld listens on it alone.
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
# slurmd and the commands on this machine get this file from slurmctld (configless).
SlurmctldParameters=enable_configless
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits this long before it starts again (default 120 s; 5 is the least).
AuthInfo=cred_expire=5,socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# Each task's environment gets LD_PRELOAD=<the loopback library> (srun's ports: 127.0.0.1).
$prolog
# No cgroups (a container may not delegate them): processes are tracked through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
# Pending jobs (a requeued one) are looked at every 2 s, not every 60.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Jobs may be requeued (submitit requeues one that reaches its time limit).
JobRequeue=1
# Seconds between SIGTERM and SIGKILL when a job is cancelled or ends: time to save.
KillWait=10
MinJobAge=300
ReturnToService=2
SlurmdTimeout=120
EnforcePartLimits=ALL
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
# Each CPU takes up to two jobs at once (small jobs share the cores rather than queue).
PartitionName=local Nodes=$NODE Default=YES MaxTime=24:00:00 DefaultTime=60 OverSubscribe=FORCE:2 State=UP
EOF
	mv "$CONF.new" "$CONF"
}

# LD_PRELOAD for the daemons: a bind() to 0.0.0.0 / :: becomes one to 127.0.0.1 / ::1.
build_loopback_shim() {
	local so=$DIR/loopback_bind.so
	if [[ -f $so && $so -nt ${BASH_SOURCE[0]} ]]; then
		echo "$so"
		return 0
	fi
	if ! command -v cc >/dev/null; then
		say "warning: no C compiler: slurmctld and slurmd listen on every interface, not 127.0.0.1 alone"
		return 0
	fi
	cat >"$DIR/loopback_bind.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
	static int (*real)(int, const struct sockaddr *, socklen_t);
	if (!real) real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
	if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		struct sockaddr_in a;
		memcpy(&a, addr, sizeof a);
		if (a.sin_addr.s_addr == htonl(INADDR_ANY)) {
			a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			return real(fd, (const struct sockaddr *)&a, sizeof a);
		}
	} else if (addr && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		struct sockaddr_in6 a;
		memcpy(&a, addr, sizeof a);
		if (!memcmp(&a.sin6_addr, &in6addr_any, sizeof a.sin6_addr)) {
			/* A dual-stack socket (torch's TCPStore) on ::ffff:127.0.0.1 answers 127.0.0.1;
			   an IPv6-only one gets ::1. */
			static const unsigned char v4lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
			memcpy(&a.sin6_addr, v4lo, sizeof v4lo);
			if (real(fd, (const struct sockaddr *)&a, sizeof a) == 0) return 0;
			a.sin6_addr = in6addr_loopback;
			return real(fd, (const struct sockaddr *)&a, sizeof a);
		}
	}
	return real(fd, addr, len);
}
C
	# Replaced, not rewritten: running daemons and jobs keep the copy they have mapped.
	cc -shared -fPIC -O2 -o "$so.new" "$DIR/loopback_bind.c" -ldl
	mv -f "$so.new" "$so"
	echo "$so"
}

start_munge() {
	if [[ -S $MUNGE_SOCKET ]] && munge -n --socket="$MUNGE_SOCKET" 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1; then
		return 0 # running (ours or the machine's)
	fi
	[[ -f /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create >/dev/null
	install -d -o munge -g munge -m 0755 /run/munge
	runuser -u munge -- "$SBIN/munged" --socket="$MUNGE_SOCKET" --pid-file=/run/munge/munged.pid 9>&-
	cp /run/munge/munged.pid "$DIR/munged.pid" # ours: `stop` ends it
	say "munged started"
}

start_daemons() { # start_daemons SHIM
	local shim=$1
	if alive "$DIR/slurmctld.pid" slurmctld; then
		say "slurmctld already running (pid $(cat "$DIR/slurmctld.pid"))"
	else
		LD_PRELOAD=$shim "$SBIN/slurmctld" -f "$CONF" 9>&- # the daemons do not keep start's lock
		say "slurmctld started"
	fi
	if alive "$DIR/slurmd.pid" slurmd; then
		say "slurmd already running (pid $(cat "$DIR/slurmd.pid"))"
	else
		local i
		for i in $(seq 50); do # slurmd fetches its config from slurmctld: wait for it to answer
			SLURM_CONF=$CONF scontrol ping 2>/dev/null | grep -q UP && break
			sleep 0.2
		done
		LD_PRELOAD=$shim "$SBIN/slurmd" --conf-server "127.0.0.1:$CTLD_PORT" -N "$NODE" 9>&-
		say "slurmd started"
	fi
}

wait_idle() {
	local state="" i
	for i in $(seq 150); do
		state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
		case $state in
		idle* | mixed* | allocated*) break ;;
		down* | drain*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
		esac
		sleep 0.2
	done
	case $state in
	idle* | mixed* | allocated*) ;;
	*) die "node $NODE is '${state:-unknown}' after 30 s: see $DIR/slurmctld.log and $DIR/slurmd.log" ;;
	esac
	sinfo >&2
}

cmd_start() {
	[[ $(id -u) == 0 ]] || die "run as root: the daemons run as root here (SlurmUser=root)"
	# The commands would read that file before the local cluster's configuration.
	[[ ! -e /etc/slurm/slurm.conf ]] || die "/etc/slurm/slurm.conf exists: this machine has a SLURM cluster of its own, use it"
	mkdir -p "$DIR"
	exec 9>"$DIR/.lock"
	flock 9 # one `start` at a time (two test processes may call it at once)
	install_missing
	local shim
	shim=$(build_loopback_shim)
	# The running daemons read the config they started with: write it only when they are not up.
	if ! alive "$DIR/slurmctld.pid" slurmctld; then write_conf "$shim"; fi
	start_munge
	start_daemons "$shim"
	wait_idle
}

stop_one() { # stop_one NAME: end the daemon of $DIR/NAME.pid, if it is running
	local pidfile=$DIR/$1.pid pid i
	if ! alive "$pidfile" "$1"; then
		rm -f "$pidfile"
		return 0
	fi
	pid=$(cat "$pidfile")
	kill "$pid"
	for i in $(seq 100); do
		[[ -d /proc/$pid ]] || break
		sleep 0.1
	done
	if [[ -d /proc/$pid ]]; then kill -KILL "$pid"; fi
	rm -f "$pidfile"
	say "$1 stopped"
}

cmd_stop() {
	if alive "$DIR/slurmctld.pid" slurmctld; then
		local jobs
		jobs=$(squeue -h -o %A 2>/dev/null || true) # the jobs left on this cluster
		if [[ -n $jobs ]]; then
			# shellcheck disable=SC2086
			scancel $jobs 2>/dev/null || true
			say "cancelled jobs: $(echo $jobs)"
			sleep 2
		fi
	fi
	stop_one slurmd
	stop_one slurmctld
	stop_one munged
}

cmd_status() {
	local name ok=0
	for name in munged slurmctld slurmd; do
		if alive "$DIR/$name.pid" "$name"; then
			echo "$name: running (pid $(cat "$DIR/$name.pid"))"
		elif [[ $name == munged ]] && [[ -S $MUNGE_SOCKET ]]; then
			echo "munged: running (not started by this script)"
		else
			echo "$name: not running"
			ok=3
		fi
	done
	if ((ok == 0)); then sinfo; fi
	return $ok
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
	echo "usage: bash scripts/slurm_local.sh start|stop|status" >&2
	exit 2
	;;
esac
