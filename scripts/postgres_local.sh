#!/usr/bin/env bash
# A PostgreSQL server on 127.0.0.1 for Optuna studies that several workers share
# (docs/scaling.md "Optuna on PostgreSQL"; tests/e2e/test_postgres_optuna.py). Debian's postgresql.
#
#   bash scripts/postgres_local.sh start    # install what is missing, start the server, create user and db
#   bash scripts/postgres_local.sh url      # the SQLAlchemy URL: hydra.sweeper.storage=$(... url)
#   bash scripts/postgres_local.sh status   # exit 0 when the server answers
#   bash scripts/postgres_local.sh stop     # stop the server `start` started
#
# Its own database cluster in $PDL_PG_DIR (/var/lib/pdl-postgres), owned by the `postgres`
# system user, on port $PDL_PG_PORT (5433, beside a Debian cluster's 5432), listening on
# 127.0.0.1 alone. The user `pdl` (password `pdl`, scram-sha-256 over TCP) owns the database
# `pdl`. `start` is safe to run twice; `stop` ends only this cluster's server.
set -euo pipefail

DIR=${PDL_PG_DIR:-/var/lib/pdl-postgres}
PORT=${PDL_PG_PORT:-5433}
DATA=$DIR/data
URL="postgresql+psycopg2://pdl:pdl@127.0.0.1:$PORT/pdl"

say() { echo "postgres_local.sh: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}

bindir() { # the newest installed server's binaries
	local d
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
	[[ -n $d && -x $d/pg_ctl ]] && echo "$d"
}

as_postgres() { runuser -u postgres -- "$@"; }

install_missing() {
	bindir >/dev/null && return 0
	command -v apt-get >/dev/null || die "postgresql missing and no apt-get to install it (Debian/Ubuntu only)"
	say "installing postgresql (apt-get)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends postgresql >/dev/null
}

running() { [[ -f $DATA/PG_VERSION ]] && as_postgres "$(bindir)/pg_ctl" status -D "$DATA" >/dev/null 2>&1; }

psql_admin() { # over the cluster's own Unix socket, as the superuser postgres
	as_postgres "$(bindir)/psql" -h "$DIR" -p "$PORT" -d postgres -v ON_ERROR_STOP=1 -qAt "$@"
}

cmd_start() {
	[[ $(id -u) == 0 ]] || die "run as root (the server runs as the postgres system user)"
	install_missing
	local bin
	bin=$(bindir)
	install -d -o postgres -g postgres -m 0700 "$DIR"
	if [[ ! -f $DATA/PG_VERSION ]]; then
		as_postgres "$bin/initdb" -D "$DATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
			-E UTF8 --locale=C.UTF-8 >/dev/null
		cat >>"$DATA/postgresql.conf" <<EOF
# scripts/postgres_local.sh
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
EOF
		say "database cluster created in $DATA"
	fi
	if running; then
		say "server already running (port $PORT)"
	else
		as_postgres "$bin/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 start >/dev/null
		say "server started on 127.0.0.1:$PORT"
	fi
	if [[ $(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'pdl'") != 1 ]]; then
		psql_admin -c "CREATE ROLE pdl LOGIN PASSWORD 'pdl'"
	fi
	if [[ $(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'pdl'") != 1 ]]; then
		psql_admin -c "CREATE DATABASE pdl OWNER pdl"
	fi
	echo "$URL"
}

cmd_stop() {
	if running; then
		as_postgres "$(bindir)/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
		say "server stopped"
	fi
}

cmd_status() {
	if running; then
		echo "postgresql: running on 127.0.0.1:$PORT ($DATA)"
	else
		echo "postgresql: not running"
		return 3
	fi
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
url) echo "$URL" ;;
*)
	echo "usage: bash scripts/postgres_local.sh start|stop|status|url" >&2
	exit 2
	;;
esac
