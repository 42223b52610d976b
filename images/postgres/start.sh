#!/bin/sh
# Runs the cluster initialised at build time in the foreground; extra arguments go to postgres
# (e.g. -c synchronous_commit=off). Ready when it logs "database system is ready to accept connections".
set -eu
exec /opt/pg/bin/postgres -D /var/lib/postgresql/bench "$@"
