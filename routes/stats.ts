import type { FastifyInstance } from 'fastify'
import { ClusterStatsSchema } from '../lib/core/stats-schema.js'

export { ClusterStatsSchema }

/** GET /realtime/stats (docs/protocol.md, HTTP API): admin or service. */
export default async function statsRoutes (app: FastifyInstance): Promise<void> {
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
