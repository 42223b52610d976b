#!/bin/sh
# Runs the cluster initialised at build time in the foreground; extra arguments go to postgres
# (e.g. -c synchronous_commit=off). Ready when it logs "database system is ready to accept connections".
# With PG_TLS_DIR (server.pem + server.key, mounted read-only) the server also speaks TLS (1.3 only):
# the key is copied into the data directory because PostgreSQL insists on owning it with mode 0600.
set -eu
PGDATA=/var/lib/postgresql/bench
if [ -n "${PG_TLS_DIR:-}" ]; then
  install -m 600 "$PG_TLS_DIR/server.key" "$PGDATA/server.key"
  install -m 644 "$PG_TLS_DIR/server.pem" "$PGDATA/server.crt"
  set -- -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key \
    -c ssl_min_protocol_version=TLSv1.3 "$@"
fi
exec /opt/pg/bin/postgres -D "$PGDATA" "$@"
