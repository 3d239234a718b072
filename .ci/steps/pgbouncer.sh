#!/usr/bin/env bash
# shellcheck shell=bash
# PgBouncer (issue #22 item 6): Debian's pgbouncer for test/integration/pgbouncer.test.ts, which
# starts its own pgbouncer process (transaction pooling, own configuration in a temporary folder)
# in front of the test PostgreSQL. Source it from .ci/run before the tests
# (`source .ci/steps/pgbouncer.sh`): it exports PGBOUNCER_REQUIRED=1, so that a missing pgbouncer
# fails the test instead of skipping it. The package's own service (port 6432) is not used.
set -euo pipefail

if ! dpkg-query -W -f='${Status}' pgbouncer 2>/dev/null | grep -q 'install ok installed'; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
fi
# Debian installs it in /usr/sbin, which is not on every PATH; the test looks there itself.
/usr/sbin/pgbouncer --version | head -1
export PGBOUNCER_REQUIRED=1
