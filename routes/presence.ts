import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { ChannelName } from '../lib/auth/channels.js'
import { ErrorReply } from './schemas.js'

/** At most this many user ids in an answer: the counts are exact, the list is a sample. */
const MAX_USER_IDS = 1000

const PresenceReply = Type.Object({
  channel: Type.String(),
  connections: Type.Integer({ description: 'connections subscribed to the channel, on every instance' }),
  users: Type.Integer({ description: 'distinct signed-in users among them' }),
  userIds: Type.Array(Type.String(), { maxItems: MAX_USER_IDS, description: `at most ${MAX_USER_IDS} of them, distinct, signed-in users only` })
})

/** GET /realtime/presence/<channel> (docs/protocol.md, "Presence"): admin or service. */
const presenceRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/realtime/presence/:channel', {
    onRequest: app.requireServiceOrAdmin,
    schema: {
      summary: 'Who is on a channel right now, over every instance',
      tags: ['presence'],
      security: [{ bearerAuth: [] }],
      params: Type.Object({ channel: ChannelName }),
      response: { 200: PresenceReply, 400: ErrorReply, 401: ErrorReply, 403: ErrorReply, 429: ErrorReply, 503: ErrorReply }
    }
  }, async (request, reply) => {
    const { channel } = request.params
    const totals = await app.hub.presenceOf(channel)
    if (totals === undefined) {
      return await reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: `channel: presence is kept only for channels under PRESENCE_CHANNELS; ${channel} is not` })
    }
    return { channel, connections: totals.connections, users: totals.users, userIds: totals.userIds.slice(0, MAX_USER_IDS) }
  })
}

export default presenceRoutes
