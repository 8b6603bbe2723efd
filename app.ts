import fastifyCors from '@fastify/cors'
import fastifyRateLimit from '@fastify/rate-limit'
import fastifyWebsocket from '@fastify/websocket'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyServerOptions, LogController } from 'fastify'
import type { Broker, DeliverFn, ResetFn } from './lib/broker/broker.js'
import { type Config, corsOrigins, trustProxy } from './lib/ops/config.js'
import { loggerOptions } from './lib/ops/logging.js'
import authPlugin from './plugins/auth.js'
import clusterPlugin from './plugins/cluster.js'
import controlPlugin from './plugins/control.js'
import configPlugin from './plugins/config.js'
import { installErrorHandler } from './plugins/error-handler.js'
import { installJsonBodyParser } from './plugins/json-body.js'
import { installMalformedQueryCheck } from './plugins/malformed-query.js'
import { closeAfterReply } from './lib/transport/answered-upgrade.js'
import { SseConnection } from './lib/transport/sse-connection.js'
import hubPlugin from './plugins/hub.js'
import kafkaPlugin from './plugins/kafka.js'
import metricsPlugin from './plugins/metrics.js'
import readinessPlugin from './plugins/readiness.js'
import spareSocketsPlugin from './plugins/spare-sockets.js'
import swaggerPlugin from './plugins/swagger.js'
import asyncApiRoutes from './routes/asyncapi.js'
import dashboardRoutes from './routes/dashboard.js'
import controlRoutes from './routes/control.js'
import healthRoutes from './routes/health.js'
import presenceRoutes from './routes/presence.js'
import historyRoutes from './routes/history.js'
import publishRoutes from './routes/publish.js'
import sseRoutes from './routes/sse.js'
import statsRoutes from './routes/stats.js'
import wsRoutes from './routes/ws.js'

/** Fragments one WebSocket message may arrive in (a browser sends one; 64 KiB in 256-byte pieces fits). */
export const WS_MAX_FRAGMENTS = 256

export interface AppOptions {
  /** Logger options or an instance; defaults to pino at LOG_LEVEL with tokens redacted. */
  logger?: FastifyServerOptions['logger']
  /** Replaces the broker chosen from the config (tests). */
  createBroker?: (deliver: DeliverFn, reset: ResetFn) => Broker
}

/**
 * Builds the gateway: every plugin and route, registered explicitly in dependency
 * order. Pure composition — it opens no port; server.ts does that.
 */
export async function buildApp (config: Config, options: AppOptions = {}) {
  const app = Fastify({
    logger: options.logger ?? loggerOptions(config.LOG_LEVEL),
    bodyLimit: config.BODY_LIMIT_BYTES,
    trustProxy: trustProxy(config),
    // Per-request lines only at debug: at publish rates they would drown everything else.
    logController: new LogController({ disableRequestLogging: config.LOG_LEVEL !== 'debug' && config.LOG_LEVEL !== 'trace' }),
    // No type coercion: a JSON body's types are what the client sent. Coercion would turn
    // the rounded number 1234567890123456800 into the string id "1234567890123456800" of
    // another user. (Query strings are read as strings.)
    ajv: { customOptions: { allErrors: false, coerceTypes: false } },
    // A request (headers and body) must arrive whole within this; a stream's response may
    // last. Node checks for late requests every connectionsCheckingInterval.
    requestTimeout: config.REQUEST_TIMEOUT_MS,
    http: {
      // Node's default (16 KiB) answered 431 to SSE resumes within the channel limits.
      maxHeaderSize: config.MAX_HEADER_BYTES,
      headersTimeout: Math.min(60_000, config.REQUEST_TIMEOUT_MS),
      connectionsCheckingInterval: Math.min(5000, Math.ceil(config.REQUEST_TIMEOUT_MS / 2))
    },
    // The one path parameter is a channel name, up to 200 characters, each of which a client
    // may percent-encode (3 bytes): the router's default of 100 answered 414 to valid names.
    routerOptions: { maxParamLength: 600 },
    // Requests arriving while the instance shuts down are answered below (drainingRequests),
    // not by Fastify: its 503 came before the routes, so /sse could not say "come back".
    return503OnClosing: false,
    // Errors the router raises before any route (a malformed URL, an over-long parameter):
    // the usual error shape, naming no part of the URL (it may carry a token). An over-long
    // parameter is a bad channel name like any other: 400, not the router's 414.
    frameworkErrors: (error, request, reply) => {
      const statusCode = error.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 400 : error.statusCode ?? 400
      const message = error.code === 'FST_ERR_BAD_URL' ? 'malformed URL' : 'bad request'
      ;(reply as FastifyReply).code(statusCode).send({ statusCode, error: 'Bad Request', message })
      closeAfterReply(request.raw, reply.raw)
    }
  }).withTypeProvider<TypeBoxTypeProvider>()

  installErrorHandler(app)
  installJsonBodyParser(app)
  installMalformedQueryCheck(app)
  await app.register(configPlugin, { config })
  await app.register(fastifyCors, {
    origin: corsOrigins(config),
    credentials: corsOrigins(config) !== '*',
    // Headers a cross-origin caller must be able to read: a replayed publish (docs/protocol.md,
    // Idempotency) and when to try again after a 429 or 503.
    exposedHeaders: ['Idempotent-Replayed', 'Retry-After', 'X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset']
  })
  await app.register(readinessPlugin)
  await app.register(metricsPlugin)
  await app.register(authPlugin)
  await app.register(hubPlugin, { createBroker: options.createBroker })
  drainingRequests(app)
  // Disconnects and revocations on every instance (after the hub: it closes connections).
  await app.register(controlPlugin)
  // Cluster stats (and, with Redis, waiting for it at start-up and the node heartbeat).
  await app.register(clusterPlugin)
  // Kafka ingress (docs/protocol.md, Kafka) only when brokers are configured.
  if (config.KAFKA_BROKERS !== undefined) await app.register(kafkaPlugin)
  // clientTracking off: ws would keep every socket in a Set of its own, with a close
  // listener closure per socket to leave it; routes/ws.ts tracks its connections already
  // and the hub closes them on shutdown (about 200 B less per idle WebSocket).
  // maxPendingAutoPongs: ws cuts a socket (no close frame) with this many pongs unwritten;
  // routes/ws.ts counts pings against the rate limit and closes a ping flood with 1008
  // first, within WS_RATE_LIMIT_BURST + WS_RATE_LIMIT_STRIKES pongs. Past this, the client
  // has stopped reading its pongs, and is cut as a client that stopped reading may be.
  // (ws 8.18+ has the option; its types do not have it yet.)
  // maxFragments: the rate limit counts whole messages, and ws's default let one message
  // arrive as 16 384 fragments (empty ones cost the server as much as full ones); past
  // this many, ws closes with 1008. Browsers send a message as one frame.
  const wsOptions = {
    maxPayload: config.WS_MAX_PAYLOAD_BYTES,
    clientTracking: false,
    maxPendingAutoPongs: config.WS_RATE_LIMIT_BURST + config.WS_RATE_LIMIT_STRIKES + 64,
    maxFragments: WS_MAX_FRAGMENTS
  }
  await app.register(fastifyWebsocket, { options: wsOptions })
  await app.register(swaggerPlugin)

  await app.register(healthRoutes)
  await app.register(asyncApiRoutes)
  await app.register(wsRoutes)
  await app.register(sseRoutes)
  // The admin dashboard at / and the browser client at /client.js.
  await app.register(dashboardRoutes)
  await app.register(async function httpApi (api) {
    // Scoped here so the limit covers the HTTP API only, one bucket per token.
    await api.register(fastifyRateLimit, {
      max: config.HTTP_RATE_LIMIT_PER_MINUTE,
      timeWindow: 60_000,
      hook: 'preHandler',
      keyGenerator: (request) => request.identity?.userId != null ? `user:${request.identity.userId}` : `ip:${request.ip}`
    })
    await api.register(publishRoutes)
    await api.register(historyRoutes)
    await api.register(presenceRoutes)
    await api.register(controlRoutes)
    await api.register(statsRoutes)
  })
  // Last: its preClose drops never-used sockets right before the server stops accepting.
  await app.register(spareSocketsPlugin)
  return app
}

export type App = Awaited<ReturnType<typeof buildApp>>

/**
 * Once the instance shuts down (the hub's preClose), a request on a connection still open
 * gets a 503 that closes the connection, as Fastify's return503OnClosing gave, except the
 * streams, which say it their own way (/ws closes with 1012, and /sse answers a stream that
 * says `system:unavailable` and ends), and /metrics, which a last scrape may still read.
 * Fastify's own 503 came before any route: behind a proxy's keep-alive connections, an
 * EventSource reconnecting through a rolling restart got that 503 and gave up for good
 * (review, session 25).
 */
function drainingRequests (app: FastifyInstance): void {
  const hub = app.hub
  app.addHook('onRequest', (request, reply, done) => {
    const path = request.routeOptions.url
    if (!hub.isShuttingDown || path === '/ws' || path === '/sse' || path === '/metrics') return done()
    reply.code(503).header('connection', 'close').header('retry-after', '1')
    // Readiness answers in its own shape, which its 503 schema requires: the error shape
    // failed to serialise and went out as a 500 on every deploy (audit, session 27).
    if (path === '/health/ready' || path === '/ready') return reply.send(SHUTTING_DOWN)
    reply.send({ statusCode: 503, error: 'Service Unavailable', message: 'server restarting; try again' })
  })
  // A request already in flight as the shutdown began is answered, and its connection closed
  // after it: left idle and kept alive (a proxy's upstream pool), it held server.close() until
  // the grace timeout killed the process, before the Kafka consumer could leave its group
  // (audit of rolling deploys behind nginx, session 27).
  app.addHook('onSend', (_request, reply, _payload, done) => {
    if (hub.isShuttingDown) reply.header('connection', 'close')
    done()
  })
  // A response whose head left before the drain (a slow download) has no such header: its
  // connection, idle once it is done, is closed here (server.close() closes idle ones once).
  // So are SSE streams ended for the shutdown that a client no longer reads: their sockets
  // are not the server's any more (SseConnection.cutIfEnded).
  app.addHook('preClose', (done) => {
    const sweep = setInterval(() => {
      app.server.closeIdleConnections()
      for (const connection of hub.connections()) if (connection instanceof SseConnection) connection.cutIfEnded()
    }, 100).unref()
    app.server.once('close', () => { clearInterval(sweep) })
    done()
  })
}

/** What /health/ready says once the instance shuts down. */
const SHUTTING_DOWN = { status: 'not_ready', checks: { instance: 'shutting_down' }, unavailable: ['instance'] }
