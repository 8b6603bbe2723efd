import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { ClusterStatsSchema } from '../lib/core/stats-schema.js'
import { ErrorReply } from './schemas.js'

export { ClusterStatsSchema }

/** GET /realtime/stats (docs/protocol.md, HTTP API): admin or service. */
const statsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/realtime/stats', {
    onRequest: app.requireServiceOrAdmin,
    schema: {
      summary: 'Connections, users and channels over every instance',
      tags: ['stats'],
      security: [{ bearerAuth: [] }],
      // 503: with Redis, the other instances' figures cannot be read (no partial answer).
      response: { 200: ClusterStatsSchema, 401: ErrorReply, 403: ErrorReply, 429: ErrorReply, 503: ErrorReply }
    }
  }, async () => await app.clusterStats())
}

export default statsRoutes
