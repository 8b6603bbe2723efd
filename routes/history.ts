import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { canSubscribe, ChannelName } from '../lib/auth/channels.js'
import { isService, requireIdentity } from '../lib/auth/identity.js'
import type { PublishedEvent } from '../lib/core/event.js'
import { storeBytesOf } from '../lib/broker/broker.js'
import { budgetKeyOf, HISTORY_READ_REFUSED } from '../lib/transport/history-read-budget.js'
import { ErrorReply, Position } from './schemas.js'

const HistoryEvent = Type.Object({
  type: Type.String(),
  channel: Type.String(),
  offset: Type.Integer(),
  payload: Type.Object({}, { additionalProperties: true }),
  ts: Type.String({ format: 'date-time' })
})
const HistoryReply = Type.Object({
  channel: Type.String(),
  events: Type.Array(HistoryEvent, { description: 'oldest first' }),
  position: Position,
  recovered: Type.Boolean({ description: 'false: the history no longer holds every event after since (or the epoch differs); reload' })
})

const Digits = (max: number, description: string) => Type.String({ pattern: `^[0-9]{1,${max}}$`, description })

/**
 * GET /realtime/history/<channel> (docs/protocol.md, "History over HTTP"): what a client may
 * read of a channel it may subscribe to (a service: any), for an inbox, a timeline, or the
 * reload after `recovered: false`.
 */
const historyRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { hub, historyPolicy, historyReadBudget } = app
  app.get('/realtime/history/:channel', {
    onRequest: app.authenticateClient,
    schema: {
      summary: 'The events a channel still holds: after a position, or its last ones',
      tags: ['history'],
      security: [{ bearerAuth: [] }],
      params: Type.Object({ channel: ChannelName }),
      querystring: Type.Object({
        since: Type.Optional(Digits(16, 'the last offset the client saw; the events after it')),
        epoch: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'the epoch of since (default: the current one)' })),
        limit: Type.Optional(Digits(9, 'at most this many events (default and most: the channel\'s history size)'))
      }),
      response: { 200: HistoryReply, 400: ErrorReply, 401: ErrorReply, 403: ErrorReply, 429: ErrorReply, 503: ErrorReply }
    }
  }, async (request, reply) => {
    const { channel } = request.params
    const identity = requireIdentity(request.identity)
    // The channel's subscribers, or a service (CONTRACT's history row): an admin is not a
    // service here, and may not read a user's own channel, which it may not subscribe to.
    if (!canSubscribe(identity, channel) && !isService(identity)) {
      return await reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: `not allowed to read ${channel}` })
    }
    const size = historyPolicy.of(channel).size
    const limit = request.query.limit === undefined ? size : Number(request.query.limit)
    if (limit < 1 || limit > Math.max(size, 1)) {
      return await reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: `limit: must be an integer from 1 to ${Math.max(size, 1)} for ${channel}` })
    }
    const since = request.query.since === undefined ? undefined : Number(request.query.since)
    if (since !== undefined && !Number.isSafeInteger(since)) {
      return await reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: 'since: must be an integer offset' })
    }
    // A user's history is budgeted (lib/transport/history-read-budget.ts); a service's is not.
    const budgetKey = isService(identity) ? undefined : budgetKeyOf(identity, request.id)
    const charge = { bytes: 0 }
    if (budgetKey !== undefined) {
      const refused = historyReadBudget.admit(budgetKey)
      if (refused !== undefined) {
        return await reply.code(429).header('retry-after', '1').send({ statusCode: 429, error: 'Too Many Requests', message: HISTORY_READ_REFUSED[refused] })
      }
      // Under way until the answer has left or its reader has gone: settled then, once, whatever happened meanwhile.
      if (request.raw.socket?.destroyed !== false) historyReadBudget.settle(budgetKey, 0)
      else reply.raw.once('close', () => { historyReadBudget.settle(budgetKey, charge.bytes) })
      charges.set(request, charge)
    }
    const result = since === undefined
      ? await hub.broker.recent(channel, limit)
      : await hub.broker.history(channel, { offset: since, epoch: request.query.epoch })
    charge.bytes = storeBytesOf(result)
    return {
      channel,
      events: result.events.slice(0, limit).map(eventOf),
      position: result.position,
      recovered: result.recovered
    }
  })

  // A user's answer is charged what Redis sent or what it weighs, whichever is more, and
  // counts as under way until it has left (or its reader has gone): answers held for readers
  // that never read are bounded too (on the memory broker, 200 of 6.5 MB each took 1.4 GB).
  app.addHook('onSend', async (request, _reply, payload) => {
    const charge = charges.get(request)
    if (charge !== undefined && typeof payload === 'string') charge.bytes = Math.max(charge.bytes, payload.length)
    return payload
  })
}

/** What a user's history answer is to be charged: set when it is read, raised once it is written. */
const charges = new WeakMap<object, { bytes: number }>()

const eventOf = (e: PublishedEvent) => ({ type: e.type, channel: e.channel, offset: e.offset, payload: e.payload, ts: e.ts })

export default historyRoutes
