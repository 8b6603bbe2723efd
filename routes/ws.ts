import { UserBudget } from '../lib/transport/user-budget.js'
import type { Socket } from 'node:net'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import type { RawData, WebSocket } from 'ws'
import { defaultChannels } from '../lib/auth/channels.js'
import { BrokerUnavailableError } from '../lib/broker/broker.js'
import { requireIdentity } from '../lib/auth/identity.js'
import { newConnectionId } from '../lib/hub/connection.js'
import { CloseCode } from '../lib/core/errors.js'
import { QuietWarning } from '../lib/core/quiet-warning.js'
import { refusalFor, REFUSAL_MESSAGES } from '../lib/hub/admission.js'
import { holdHandshake, releaseHandshake } from '../lib/transport/handshake-hold.js'
import { compactListeners, detachUpgradeResponse, rawSocketOf } from '../lib/transport/internals.js'
import { endWhenQuiet } from '../lib/transport/quiet-end.js'
import { serverFrame } from '../lib/transport/protocol.js'
import { WsConnection, type WsConnectionOptions } from '../lib/transport/ws-connection.js'
import { WsSession, type WsSessionDeps } from '../lib/transport/ws-session.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** @fastify/cors reads `false` as "no CORS for this route"; its types do not declare it. */
    cors?: false | Record<string, unknown>
  }
}

/**
 * GET /ws (docs/protocol.md, WebSocket). Authentication runs in onRequest, before the upgrade, so a
 * refusal is a plain HTTP 401. The socket's listeners are attached before any await.
 */
const wsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config, hub, gatewayMetrics: metrics } = app
  // One timer for every socket: ping each, cut those that have not answered within two
  // intervals (docs/protocol.md: one missed interval is a slow client or a busy loop, not a
  // dead one). The hub's registry is the list (a Set of our own would cost an entry per connection).
  const heartbeat = setInterval(() => {
    for (const connection of hub.connections()) {
      if (!(connection instanceof WsConnection)) continue
      if (connection.unanswered >= 2) {
        connection.socket.terminate()
        continue
      }
      connection.unanswered++
      connection.socket.ping()
    }
  }, config.HEARTBEAT_MS)
  heartbeat.unref()
  app.addHook('onClose', async () => { clearInterval(heartbeat) })

  const admissionLimits = { maxConnections: config.MAX_CONNECTIONS, maxPerUser: config.MAX_CONNECTIONS_PER_USER }

  // Shared by every connection: what a socket holds for its whole life is what idle
  // memory per connection is made of, so nothing here is built per socket.
  const connectionOptions: WsConnectionOptions = {
    sendBufferLimit: config.SEND_BUFFER_LIMIT_BYTES,
    writeBatch: hub.writeBatch,
    onTooSlow: () => metrics.slowClients.inc({ transport: 'ws' })
  }
  const sessionDeps: WsSessionDeps = {
    ...connectionOptions,
    hub,
    expiries: app.expiries,
    verifyToken: (token) => app.verifyToken(token),
    stats: () => app.clusterStats(),
    maxRewind: app.historyPolicy.maxSize,
    log: app.log,
    rateLimit: {
      perSecond: config.WS_RATE_LIMIT_PER_SECOND,
      burst: config.WS_RATE_LIMIT_BURST,
      strikes: config.WS_RATE_LIMIT_STRIKES
    },
    subscribeBudget: app.subscribeBudget,
    newChannelBudget: app.newChannelBudget,
    inboundBudget: new UserBudget(config.WS_INBOUND_BYTES_PER_SECOND, config.WS_INBOUND_BYTES_BURST),
    historyReadBudget: app.historyReadBudget,
    brokerDownWarning: new QuietWarning(BROKER_DOWN_WARNING_INTERVAL_MS, {
      onHeldBack: (heldBack) => app.log.warn({ heldBack }, 'frame handling failed: the broker is unavailable (held back since the last line)')
    }),
    onFrame: metrics.frameReceived,
    onRateLimited: () => metrics.rateLimited.inc()
  }

  // The listeners every socket shares. A socket's own state hangs off the socket, so a
  // connection costs no closures: after ws's own objects, they were most of its idle memory.
  function onMessage (this: WebSocket, data: RawData, isBinary: boolean): void {
    const session = sessionOf(this)
    if (session.isClosing) return
    const admission = session.admit(isBinary ? 0 : byteLengthOf(data))
    // A refused frame's text is kept only to name its id in the `rate_limited` answer.
    session.receive(admission === 'flooding' || isBinary ? '' : data.toString(), admission)
    session.releaseReadBuffer()
  }
  /**
   * Pings count against the inbound rate limit like frames (ws answers each with a pong
   * before this runs): a ping flood gets `rate_limited` errors, then the 1008 close frame,
   * at once rather than queued behind frames still being handled, so the pongs stop. (A
   * client that pipelines a flood of pings before its 101 may see these errors before
   * `system:connected`: the greeting waits for its own channel's subscription.)
   */
  function onPing (this: WebSocket): void {
    const session = sessionOf(this)
    session.releaseReadBuffer()
    admitControlFrame(session, 'pings')
  }
  /** Pongs answer the heartbeat; unasked ones count against the rate limit like pings. */
  function onPong (this: WebSocket): void {
    const session = sessionOf(this)
    session.releaseReadBuffer()
    if (session.unanswered > 0) session.unanswered = 0
    else admitControlFrame(session, 'pongs')
  }
  /** A control frame against the inbound rate limit: answered at once, not queued behind frames. */
  function admitControlFrame (session: WsSession, what: 'pings' | 'pongs'): void {
    if (session.isClosing) return
    const admission = session.admit()
    if (admission === 'limited') session.send(serverFrame.error('rate_limited', `too many ${what}; slow down`))
    else if (admission === 'flooding') session.close(CloseCode.POLICY_VIOLATION, 'flooding')
  }
  function onError (this: WebSocket, err: Error): void {
    app.log.debug({ err, connectionId: (this as SessionSocket)[kSession]?.id }, 'socket error')
    // ws has already queued the close frame that names the error (1009 for a frame too
    // large, 1002 for a protocol error) and drains what the client still sends: cutting the
    // socket now would race that frame (the client saw 1006) and turn the FIN into a RST.
    // The client answers the close; a silent one is cut after a grace period. ws's end of
    // the TCP connection waits until the client is quiet, so a proxy does not turn it into
    // a RST that loses the close frame (lib/transport/quiet-end.ts).
    const raw = rawSocketOf(this)
    if (raw !== undefined) endWhenQuiet(raw, END_QUIET_MS, CLOSE_GRACE_MS)
    cutLater(this)
  }
  function onClose (this: WebSocket): void {
    const session = sessionOf(this)
    session.dispose()
    hub.remove(session)
  }

  /**
   * Subscribes a new connection to its own channels, then greets it; the 101 held since
   * onRequest leaves with the greeting (lib/transport/handshake-hold.ts). Never rejects.
   */
  function greet (connection: WsSession, raw: Socket): Promise<void> {
    const identity = connection.identity
    const channels = defaultChannels(identity)
    return hub.subscribe(connection, channels).then((outcome) => {
      connection.send(serverFrame.connected({
        connectionId: connection.id,
        userId: identity.userId,
        roles: identity.roles,
        channels,
        heartbeatMs: config.HEARTBEAT_MS
      }))
      // Its own channels' live events stay held for its first frame, a resume (holdOwnChannels).
      outcome.replay(true)
      connection.holdOwnChannels(channels)
      releaseHandshake(raw)
    }).catch((err) => {
      // Redis away (an outage, a shard's failover): every connect meanwhile comes here, and
      // the readiness probe and the broker's own log already say why; one line each, no stack
      // (audit: 238 stacks in one failover).
      if (err instanceof BrokerUnavailableError) {
        metrics.refusedConnections.inc({ transport: 'ws', reason: 'broker_unavailable' })
        app.log.warn({ connectionId: connection.id, reason: err.message }, 'could not subscribe a new connection: the broker is unavailable')
      } else {
        app.log.error({ err, connectionId: connection.id }, 'could not subscribe a new connection')
      }
      connection.close(CloseCode.INTERNAL_ERROR, 'could not subscribe')
      releaseHandshake(raw)
    })
  }

  /** The last onRequest hook: the upgrade is allowed, so its 101 may wait for the greeting. */
  async function holdUpgrade (request: FastifyRequest): Promise<void> {
    if (request.ws) holdHandshake(request.raw.socket)
  }

  /** An upgraded socket: refused at a limit, or a session greeted on its own channels. */
  function acceptSocket (socket: WebSocket, request: FastifyRequest): void {
    const raw = request.raw.socket
    releaseUpgradeRequest(socket, raw)
    socket.on('error', onError)
    const identity = requireIdentity(request.identity)
    const refusal = refusalFor(hub, identity, admissionLimits)
    if (refusal !== null) {
      metrics.refusedConnections.inc({ transport: 'ws', reason: refusal })
      // A bare connection, only to close it: no session, no hub entry, no expiry.
      // Shutting down: 1012, reconnect elsewhere (docs/protocol.md, close codes); a limit: 1013.
      const code = refusal === 'shutting_down' ? CloseCode.SERVICE_RESTART : CloseCode.TRY_AGAIN_LATER
      new WsConnection(newConnectionId(), identity, socket, connectionOptions).close(code, REFUSAL_MESSAGES[refusal])
      releaseHandshake(raw)
      return
    }

    const session = new WsSession(newConnectionId(), identity, socket, sessionDeps)
    hub.add(session)
    ;(socket as SessionSocket)[kSession] = session
    session.holdFramesUntil(greet(session, raw))
    socket.on('message', onMessage)
    socket.on('ping', onPing)
    socket.on('pong', onPong)
    socket.on('close', onClose)
    // Its listeners are set for life: a compact table instead of a hash table per socket.
    compactListeners(socket)
  }

  app.route({
    method: 'GET',
    url: '/ws',
    // No CORS on an upgrade: browsers do not apply it to WebSocket and never see the headers
    // (the 101 is written by ws); the origin check above is what guards /ws (docs/protocol.md).
    config: { cors: false },
    onRequest: [app.checkOrigin, app.authenticateClient, holdUpgrade],
    schema: { hide: true },
    // A plain GET (no Upgrade header, or a proxy that dropped it): say what this path speaks.
    handler: async (_request, reply) => reply.code(426).header('upgrade', 'websocket').header('connection', 'Upgrade')
      .send({ statusCode: 426, error: 'Upgrade Required', message: '/ws speaks WebSocket: send Upgrade: websocket (a proxy in between must pass the Upgrade and Connection headers on)' }),
    wsHandler: acceptSocket
  })
}

export default wsRoutes

/** How long a closing socket may take to finish the closing handshake before it is cut. */
const CLOSE_GRACE_MS = 2000
/** While the broker is away, frames failing for it are logged once per this, with how many more there were. */
const BROKER_DOWN_WARNING_INTERVAL_MS = 5000
/** After an error close, the client counts as done sending once this long silent (lib/transport/quiet-end.ts). */
const END_QUIET_MS = 100

function cutLater (socket: WebSocket): void {
  setTimeout(() => { if (socket.readyState !== socket.CLOSED) socket.terminate() }, CLOSE_GRACE_MS).unref()
}

/** What the shared listeners need of one socket: its session (which is its connection). */
const kSession = Symbol('gateway session')
type SessionSocket = WebSocket & { [kSession]?: WsSession }
const sessionOf = (socket: WebSocket): WsSession => (socket as SessionSocket)[kSession] as WsSession

/**
 * @fastify/websocket's own 'error' listener closes over the upgrade's request and reply,
 * and the upgrade leaves its ServerResponse on the raw socket: together they keep the
 * request, its headers (token included) and its logger alive as long as the socket,
 * several kilobytes per idle connection. Our 'error' listener does what theirs did
 * (terminate), without them.
 */
function releaseUpgradeRequest (socket: { removeAllListeners(event: 'error'): unknown }, raw: Socket): void {
  socket.removeAllListeners('error')
  detachUpgradeResponse(raw)
}

/** A message's size in bytes, as ws hands it over (one Buffer unless asked otherwise). */
const byteLengthOf = (data: RawData): number => Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : data.byteLength
