#!/usr/bin/env bash
# CI step (#22 item 1, docs/operations/deploy.md): the production build and install, the same
# commands as the Dockerfile's. Builds (npm run build), packs the artifact (npm run pack:prod), then
# test/integration/production-install.test.ts installs it with `npm ci --omit=dev --ignore-scripts`
# in an empty folder (the npm registry must be reachable), makes the folder read-only, starts it with
# `npm run start:prod` against a new database on the machine's PostgreSQL 15 with TLS on, makes
# tokens with `npm run token:prod`, an organisation and a credential through the portal's REST API,
# and resolves the key over gRPC. Needs PostgreSQL on 127.0.0.1:5432 (trust auth for postgres), or
# PRODUCTION_INSTALL_DATABASE_URL naming a server where it may create and drop a database.
set -euo pipefail
cd "$(dirname "$0")/../.."

npm run build
tarball=$(npm run --silent pack:prod | tail -1)
echo "artifact: ${tarball} ($(du -h "${tarball}" | cut -f1))"
PRODUCTION_INSTALL_TEST=1 PRODUCTION_INSTALL_TARBALL="$PWD/${tarball}" npx tsx test/run.ts test/integration/production-install.test.ts
