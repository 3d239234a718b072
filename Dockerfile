# syntax=docker/dockerfile:1
# Provider Credentials: one image for the credentials service (the default command) and the admin
# portal (command ["portal/server.js"]). docs/operations/deploy.md.
#
# The steps are CI's production install (.ci/steps/production-install.sh), in the same order and
# with the same commands: `npm run build`, `npm run pack:prod`, then `npm ci --omit=dev
# --ignore-scripts` of that artifact in an empty folder. CI runs them and starts the result; the
# image build itself was not run where this file was written (no container engine there).

# 1. Build: every dependency, the TypeScript compiler and Vite; the artifact in dist/release/.
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
COPY packages/wire/package.json packages/wire/
COPY portal/package.json portal/
# No install scripts: the build needs none (the generated code is committed; esbuild and Vite's
# bundler ship their binaries in platform packages), and the embedded PostgreSQL is not used here.
RUN npm ci --engine-strict --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run build && npm run pack:prod

# 2. Install: the artifact and its runtime dependencies only (no tsx, TypeScript, Vite or Svelte).
FROM node:20-bookworm-slim AS install
WORKDIR /app
COPY --from=build /src/dist/release/ /tmp/release/
RUN tar -xzf /tmp/release/provider-credentials-*.tgz -C /app \
 && npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf /tmp/release /root/.npm

# 3. Run: Node.js and the installation, no shell and no package manager, a non-root user
# (distroless "nonroot", uid 65532). The files belong to root: the process cannot change them.
FROM gcr.io/distroless/nodejs20-debian12:nonroot
WORKDIR /app
COPY --from=install --chown=0:0 /app /app
ENV NODE_ENV=production
USER 65532:65532
# gRPC, Connect/gRPC-Web, Prometheus metrics (METRICS_PORT), the portal.
EXPOSE 50051 50052 9464 3000
# The service's readiness (grpc.health.v1 over the Connect port, TLS when TLS_CERT_FILE is set); the
# portal's container overrides it with [".../healthcheck.js", "portal"] (compose.yaml).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/nodejs/bin/node", "dist/service/src/cli/healthcheck.js", "service"]
ENTRYPOINT ["/nodejs/bin/node", "--enable-source-maps"]
CMD ["dist/service/src/main.js"]
