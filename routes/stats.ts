import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { ClusterStatsSchema } from '../lib/core/stats-schema.js'

export { ClusterStatsSchema }

/** GET /realtime/stats (docs/protocol.md, HTTP API): admin or service. */
const statsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/realtime/stats', {
    onRequest: app.requireServiceOrAdmin,
    schema: {
      summary: 'Connections, users and channels over every instance',
      tags: ['stats'],
      security: [{ bearerAuth: [] }],
      response: { 200: ClusterStatsSchema }
    }
  }, async () => await app.clusterStats())
}

export default statsRoutes
