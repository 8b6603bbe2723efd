import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { IncomingMessage } from 'node:http'
import type { FastifyReply } from 'fastify'
import { Type } from '@sinclair/typebox'
import { BrokerUnavailableError, type SincePosition } from '../lib/broker/broker.js'
import { canSubscribe, defaultChannels, parseChannelList } from '../lib/auth/channels.js'
import { requireIdentity } from '../lib/auth/identity.js'
import { refusalFor, REFUSAL_MESSAGES } from '../lib/hub/admission.js'
import { newConnectionId } from '../lib/hub/connection.js'
import { compactListeners, releaseHijackedReply } from '../lib/transport/internals.js'
import { SSE_HEADERS, SseConnection, type SseStreams } from '../lib/transport/sse-connection.js'
import { decodeCursor } from '../lib/transport/sse-cursor.js'
import { REPLAY_ROOM_TAKEN } from '../lib/transport/replay-backlog.js'
import { budgetKeyOf, HISTORY_READ_REFUSED } from '../lib/transport/history-read-budget.js'
import { chargeSubscribe, NEW_CHANNELS_REFUSED, refundSubscribe } from '../lib/transport/user-budget.js'
import { ErrorReply } from './schemas.js'
import { channelRecord } from '../lib/core/channel-record.js'
import { allowedOrigins } from '../lib/ops/config.js'

const SseQuery = Type.Object({
  channels: Type.Optional(Type.String({ maxLength: 64 * 1024, description: 'comma-separated channel names' })),
  token: Type.Optional(Type.String({ description: 'JWT, for clients that cannot set headers' })),
  lastEventId: Type.Optional(Type.String({ description: 'resume cursor, when Last-Event-ID cannot be sent' })),
  rewind: Type.Optional(Type.String({ pattern: '^[0-9]{1,9}$', description: 'the last n events of every channel first; ignored on a resume (a Last-Event-ID)' }))
})

/** What a resume that lost something gets first (docs/protocol.md, Server-Sent Events). */
const RECOVERY_FAILED = { event: 'system:recovery', data: { recovered: false } } as const

const plainError = (reply: FastifyReply, statusCode: number, error: string, message: string) =>
  reply.code(statusCode).send({ statusCode, error, message })

/**
 * GET /sse (docs/protocol.md, Server-Sent Events). Refusals are plain HTTP; once accepted the response is
 * handed over (hijacked) to an SseConnection that the hub feeds like any other.
 */
const sseRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config, hub, gatewayMetrics: metrics } = app
  const admissionLimits = { maxConnections: config.MAX_CONNECTIONS, maxPerUser: config.MAX_CONNECTIONS_PER_USER }
  // One object and these callbacks for every stream: none of it is kept per stream.
  const sseStreams: SseStreams = {
    sendBufferLimit: config.SEND_BUFFER_LIMIT_BYTES,
    writeBatch: hub.writeBatch,
    expiries: app.expiries,
    onTooSlow: () => metrics.slowClients.inc({ transport: 'sse' }),
    onClosed: (connection) => hub.remove(connection)
  }

  // One timer for every stream: comment heartbeats keep proxies from closing idle streams.
  // The hub's members are the registry (no set of streams of its own: an entry per stream).
  const heartbeat = setInterval(() => {
    for (const connection of hub.connections()) if (connection instanceof SseConnection) connection.heartbeat()
  }, config.SSE_HEARTBEAT_MS)
  heartbeat.unref()
  app.addHook('onClose', async () => { clearInterval(heartbeat) })
  const streamOrigins = allowedOrigins(config)

  app.get('/sse', {
    onRequest: [app.checkOrigin, app.authenticateClient],
    schema: {
      summary: 'Server-Sent Events stream of the given channels',
      tags: ['streams'],
      querystring: SseQuery,
      produces: ['text/event-stream'],
      // The 200 is the stream itself (written by SseConnection, never serialized here).
      response: {
        200: Type.String({ description: 'the event stream (docs/protocol.md, Server-Sent Events)' }),
        400: { ...ErrorReply, description: 'a bad channel list or rewind, more channels than MAX_CHANNELS_PER_CONNECTION, or a stream asked for behind another response still going on its connection (a pipelined request)' },
        401: ErrorReply,
        403: { ...ErrorReply, description: 'a channel it may not read, or a browser Origin outside WS_ALLOWED_ORIGINS' },
        503: { ...ErrorReply, description: 'the user\'s (or, with no user, the address\'s) connection limit (Retry-After); while the instance shuts down or is full, the broker is unreachable, the user is past its subscribe budget (WS_SUBSCRIBES_PER_SECOND) or the instance its budget of new channels (NEW_CHANNELS_PER_SECOND), or a resume or rewind is past the user\'s history read budget or must wait for room other replays hold, the answer is a 200 stream that says `system:unavailable` and ends' }
      }
    }
  }, async (request, reply) => {
    // Asked for behind another response still being sent on its connection (pipelined in
    // one packet, behind a stream most likely): it could not start before that one ends, and
    // on Node 20 its response never closed when the client left: a connection counted for
    // ever against the user's and the instance's limits (review, session 32).
    if (reply.raw.socket === null) {
      return plainError(reply, 400, 'Bad Request', 'a stream cannot wait behind another response on its connection (a pipelined request)')
    }
    const identity = requireIdentity(request.identity)
    const list = parseChannelList(request.query.channels)
    if (!list.ok) return plainError(reply, 400, 'Bad Request', list.message)
    const requested = list.channels
    const forbidden = requested.filter((c) => !canSubscribe(identity, c))
    if (forbidden.length > 0) return plainError(reply, 403, 'Forbidden', `not allowed to read ${forbidden.slice(0, 5).join(', ')}`)
    const channels = [...new Set([...defaultChannels(identity), ...requested])]
    if (channels.length > config.MAX_CHANNELS_PER_CONNECTION) {
      return plainError(reply, 400, 'Bad Request', `at most ${config.MAX_CHANNELS_PER_CONNECTION} channels per connection`)
    }
    const refusal = refusalFor(hub, identity, admissionLimits)
    // A stream that cannot be served just now says come back (EventSource gives up on a 503), counted as refused.
    const comeBack = (reason: string, message: string): void => {
      metrics.refusedConnections.inc({ transport: 'sse', reason })
      comeBackSoon(reply, streamOrigins, message, reason)
    }
    // A full instance is a moment (a deploy moved its neighbours' streams here): come back.
    // A user's or an address's limit is theirs to mend, and stays a 503 (docs/protocol.md).
    if (refusal === 'shutting_down' || refusal === 'instance_limit') return comeBack(refusal, REFUSAL_MESSAGES[refusal])
    if (refusal !== null) {
      metrics.refusedConnections.inc({ transport: 'sse', reason: refusal })
      return plainError(reply.header('retry-after', '5'), 503, 'Service Unavailable', `${REFUSAL_MESSAGES[refusal]}; try again later`)
    }

    const lastEventId = request.headers['last-event-id'] ?? request.query.lastEventId
    const resuming = typeof lastEventId === 'string' && lastEventId !== ''
    const cursor = resuming ? decodeCursor(lastEventId) : null
    const since = channelRecord<SincePosition>()
    // A channel the cursor does not name starts live: the client did not have it before (a stream reopened with more channels, as
    // the browser client does to subscribe over SSE), so it missed nothing there.
    if (cursor !== null) {
      for (const channel of channels) {
        const position = cursor.get(channel)
        if (position !== undefined) since[channel] = position
      }
    }

    const asked = request.query.rewind === undefined ? undefined : Number(request.query.rewind)
    if (asked !== undefined && (asked < 1 || asked > app.historyPolicy.maxSize)) {
      return plainError(reply, 400, 'Bad Request', `rewind must be an integer from 1 to ${app.historyPolicy.maxSize}`)
    }
    // Ignored on a resume (docs/protocol.md, Server-Sent Events): a channel the cursor does
    // not name starts live, and a cursor that is not ours is answered with system:recovery.
    const rewind = resuming ? undefined : asked

    // The channels it names besides its own, once each: within its user's subscribe budget (as
    // its WebSocket frames are), and those no connection here holds yet within the instance's.
    const own = defaultChannels(identity)
    const named = channels.filter((c) => !own.includes(c))
    const userKey = budgetKeyOf(identity, request.id)
    const budgets = { subscribe: app.subscribeBudget, newChannels: app.newChannelBudget }
    const fresh = hub.unheldCount(named)
    const refused = chargeSubscribe(budgets, userKey, named.length, fresh)
    if (refused === 'subscribe_budget') {
      return comeBack(refused, `too many channel subscriptions (${app.subscribeBudget.perSecond}/s for a user); try again in a moment`)
    }
    if (refused === 'new_channels') return comeBack(refused, NEW_CHANNELS_REFUSED)
    // What the budgets took is given back for a stream refused before its subscription was made.
    const refund = (): void => { refundSubscribe(budgets, userKey, named.length, fresh) }
    // A resume or a rewind reads history: within the user's budget (lib/transport/history-read-budget.ts).
    const budgetKey = rewind !== undefined || Object.keys(since).length > 0 ? userKey : undefined
    const readRefused = budgetKey === undefined ? undefined : app.historyReadBudget.admit(budgetKey)
    if (readRefused !== undefined) {
      refund()
      return comeBack('history_budget', HISTORY_READ_REFUSED[readRefused])
    }
    const connection = new SseConnection(newConnectionId(), identity, reply.raw, sseStreams)
    hub.add(connection)
    let outcome
    let storeBytes = 0
    try {
      outcome = await hub.subscribe(connection, channels, since, rewind)
      storeBytes = outcome.storeBytes
    } catch (err) {
      hub.remove(connection)
      refund()
      if (!(err instanceof BrokerUnavailableError)) throw err
      return comeBack('broker_unavailable', 'the event broker is unavailable')
    } finally {
      if (budgetKey !== undefined) app.historyReadBudget.settle(budgetKey, storeBytes)
    }
    // The instance began to shut down while the subscription was set up: come back elsewhere
    // (review: the stream opened and ended at once, and its kept-alive connection held the
    // shutdown, as a proxy's upstream pool keeps it).
    if (hub.isShuttingDown) {
      hub.remove(connection)
      return comeBack('shutting_down', REFUSAL_MESSAGES.shutting_down)
    }
    // The client may have gone while the subscription was set up (its close has run).
    if (connection.isClosed) {
      hub.remove(connection)
      reply.hijack()
      return
    }

    for (const channel of channels) connection.setPosition(channel, outcome.startsAfter[channel])
    // Nothing awaited from here to the replay, so the room it was weighed against stays.
    if (!outcome.replayCanStart()) {
      hub.remove(connection)
      return comeBack('replay_room', REPLAY_ROOM_TAKEN)
    }

    reply.hijack()
    // Fastify's response listeners would keep its request and reply (logger, query,
    // headers) as long as the stream: nothing after this reads them.
    releaseHijackedReply(reply.raw)
    reply.raw.writeHead(200, { ...SSE_HEADERS, ...corsHeaders(reply, streamOrigins) })
    // `exp` is enforced on streams too (open watches it): the stream ends when the token
    // expires, and EventSource's reconnect with the same token is then refused with 401.
    // A resume that cannot give every channel's missed events (a cursor that is not ours, a
    // position no longer held) says so first, right after system:connected (before any
    // presence count that waited meanwhile).
    const lostSomething = resuming && (cursor === null || Object.values(outcome.recovered).some((r) => !r))
    connection.open({ connectionId: connection.id, userId: identity.userId, channels }, lostSomething ? RECOVERY_FAILED : undefined)
    outcome.replay()
    forgetRequest(request.raw)
    // The response's listeners of the stream's life are all in: its table as a compact
    // object (the request's and the socket's are compact already in Node's streams).
    compactListeners(reply.raw)
  })
}

export default sseRoutes

/**
 * Answers a request that cannot be served just now (the instance restarting or full, the
 * broker unreachable) with a stream that only says so and ends: `event: system:unavailable`,
 * and a `retry:` of 1–3 s, 5–10 s from a full instance (spread, so an audience does not come
 * back at once). EventSource gives up for good on any status but 200 (HTML Living Standard,
 * "fail the connection"): a 503 left a legacy browser's page dead after a Redis blip (a
 * black-box audit, session 25), and after a deploy filled the instances that were left
 * (session 28). A stream that ends, it reconnects by itself, with its Last-Event-ID
 * (docs/protocol.md, Server-Sent Events).
 */
function comeBackSoon (reply: FastifyReply, streamOrigins: '*' | Set<string>, message: string, reason: string): void {
  const [minMs, spreadMs] = reason === 'instance_limit' ? [5000, 5000] : [1000, 2000]
  const retryMs = minMs + Math.floor(Math.random() * spreadMs)
  // Its connection ends with it (SSE_HEADERS: Connection: close): while the instance shuts
  // down, one left idle and kept alive (a proxy's upstream pool) held server.close() until
  // the grace timeout (audit).
  const headers = { ...SSE_HEADERS, ...corsHeaders(reply, streamOrigins) }
  reply.hijack()
  reply.raw.writeHead(200, headers)
  reply.raw.end(`retry: ${retryMs}\nevent: system:unavailable\ndata: ${JSON.stringify({ status: 503, reason: message, retryMs })}\n\n`)
}

/** What a stream's request reads as its headers once the route is done with them. */
const NO_HEADERS = Object.freeze({})

/**
 * Node keeps a stream's request as long as its response, with its URL and headers: the
 * token (Authorization or `?token=`), and from a browser its cookies, user agent and the
 * rest, often a kilobyte or two per idle stream. Nothing reads them once the stream is
 * open, so the URL keeps its path only, the parsed headers are dropped and the raw ones
 * emptied in place (Node would rebuild `req.headers` from them, as empty strings).
 */
function forgetRequest (req: IncomingMessage): void {
  req.rawHeaders.fill('')
  req.headers = NO_HEADERS
  const query = req.url?.indexOf('?') ?? -1
  if (query !== -1) req.url = req.url?.slice(0, query)
}

/**
 * A hijacked reply skips Fastify's onSend, so the CORS headers set so far (@fastify/cors,
 * for CORS_ORIGIN) are copied over; and, for an origin that
 * WS_ALLOWED_ORIGINS names but CORS_ORIGIN does not, the same headers anyway: the variable
 * says which origins may open the stream from a browser, and EventSource from another
 * origin reads nothing without them. A WS_ALLOWED_ORIGINS of `*` adds nothing (CORS_ORIGIN
 * alone decides, as before).
 */
function corsHeaders (reply: FastifyReply, streamOrigins: '*' | Set<string>): Record<string, string> {
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (name.startsWith('access-control-') || name === 'vary') headers[name] = String(value)
  }
  const origin = reply.request.headers.origin
  if (headers['access-control-allow-origin'] === undefined && origin !== undefined && streamOrigins !== '*' && streamOrigins.has(origin)) {
    headers['access-control-allow-origin'] = origin
    headers['access-control-allow-credentials'] = 'true'
    headers.vary = headers.vary === undefined ? 'Origin' : `${headers.vary}, Origin`
  }
  return headers
}
