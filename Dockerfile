# syntax=docker/dockerfile:1
# realtime-gateway: build with the dev dependencies, run with the production ones only.
# test/deploy/packaging.test.ts checks the rules below statically (no Docker engine in CI).

# Node 24 LTS: the production runtime (CI runs the suite on it; Node 20 is past end of life).
ARG NODE_IMAGE=node:24-slim

# ---- build: TypeScript → dist/ (and whatever else `npm run build` makes) ----
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
# public/ (static files, if the project has them) must exist for the COPY below.
RUN npm run build && mkdir -p public

# ---- runtime: production dependencies, the build output, a non-root user ----
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    PORT=3000 \
    HOST=0.0.0.0
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
# Owned by root, read-only to the process: it cannot rewrite its own code.
COPY --from=build /app/dist ./dist
COPY --from=build /app/public ./public
USER node
EXPOSE 3000
# node:24-slim has no curl: Node's own fetch asks the liveness probe.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/health/live').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node itself is PID 1's child (compose: init: true) or PID 1, never npm: SIGTERM reaches
# the gateway, which closes clients with 1012 and exits within SHUTDOWN_TIMEOUT_MS.
STOPSIGNAL SIGTERM
CMD ["node", "dist/server.js"]
