#!/bin/sh
# Build-time initialisation: cluster, scram-sha-256 role, database and schema, so a container
# starts serving in about a second instead of running initdb on every start.
set -eu
PASSWORD="$1"
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PGDATA=/var/lib/postgresql/bench
SOCKDIR=/var/run/postgresql
as_pg() { su postgres -s /bin/sh -c "$1"; }

mkdir -p "$PGDATA" "$SOCKDIR"
chown postgres:postgres "$PGDATA" "$SOCKDIR"
chmod 700 "$PGDATA"
as_pg "$BIN/initdb -D $PGDATA -U postgres --encoding=UTF8 --locale=C --auth-local=trust --auth-host=scram-sha-256 --no-sync" >/dev/null

cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = '*'
port = 5432
unix_socket_directories = '$SOCKDIR'
password_encryption = 'scram-sha-256'
max_connections = 300
log_connections = off
log_line_prefix = '%m [%p] '
CONF
# Any address, but only with a SCRAM password (initdb only allows the loopback addresses); over
# TLS when the server runs with ssl = on (start.sh, PG_TLS_DIR), else in the clear.
cat >> "$PGDATA/pg_hba.conf" <<HBA
hostssl all all 0.0.0.0/0 scram-sha-256
hostssl all all ::/0 scram-sha-256
host all all 0.0.0.0/0 scram-sha-256
host all all ::/0 scram-sha-256
HBA

as_pg "$BIN/pg_ctl -D $PGDATA -o \"-c listen_addresses='' \" -w -s start"
printf '%s\n' \
  "CREATE ROLE bench LOGIN PASSWORD :'pw';" \
  "CREATE DATABASE bench OWNER bench;" \
  | as_pg "psql -X -q -h $SOCKDIR -U postgres -d postgres -v ON_ERROR_STOP=1 -v pw='$PASSWORD'"
{ echo "SET ROLE bench;"; cat /opt/pg/schema.sql; } \
  | as_pg "psql -X -q -h $SOCKDIR -U postgres -d bench -v ON_ERROR_STOP=1"
as_pg "$BIN/pg_ctl -D $PGDATA -m fast -w -s stop"
ln -sf "$BIN" /opt/pg/bin
