import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { buildAsyncApiDocument } from '../lib/ops/asyncapi.js'

/** Kept in step with the OpenAPI document's version (plugins/swagger.ts). */
const APP_VERSION = '0.1.0'

/**
 * GET /api/asyncapi.json: the AsyncAPI 3 document of /ws and /sse. Servers name the host
 * the caller used (behind a proxy: its Host header), so the document works where it is read.
 */
const asyncApiRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/api/asyncapi.json', {
    schema: { summary: 'AsyncAPI 3 document of the WebSocket and SSE protocol', tags: ['docs'] }
  }, async (request) => buildAsyncApiDocument({
    host: request.host,
    secure: request.protocol === 'https',
    version: APP_VERSION
  }))
}

export default asyncApiRoutes
