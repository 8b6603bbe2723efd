import fastifySwagger from '@fastify/swagger'
import fastifySwaggerUi from '@fastify/swagger-ui'
import fp from 'fastify-plugin'

/** The OpenAPI document, built from the routes' schemas, and Swagger UI at /api/docs. */
export default fp(async (app) => {
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'realtime-gateway',
        description: 'Real-time push gateway. Publishing routes need a JWT with role service or admin. ' +
          'Clients connect to GET /ws (WebSocket) or GET /sse (Server-Sent Events): every frame, its payload schema and ' +
          'who may subscribe to which channel are in the [AsyncAPI 3 document](/api/asyncapi.json).',
        version: '0.1.0'
      },
      components: {
        securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } }
      }
    }
  })
  await app.register(fastifySwaggerUi, {
    routePrefix: '/api/docs',
    // Swagger UI's own policy (hashes of its inline scripts), but no page may frame it (a
    // framed docs page could be used to have someone paste a token: audit, session 27), and
    // no upgrade to https, which would break it on a plain-HTTP instance.
    staticCSP: true,
    transformStaticCSP: (header: string) => header
      .replace("frame-ancestors 'self'", "frame-ancestors 'none'")
      // Its inline style attributes (no script): without them a console error on every page.
      .replace("style-src 'self' https:", "style-src 'self' 'unsafe-inline'")
      .replace(/\s*upgrade-insecure-requests;?/, ''),
    uiHooks: {
      onRequest: (_request, reply, done) => {
        reply.header('x-content-type-options', 'nosniff').header('x-frame-options', 'DENY').header('referrer-policy', 'no-referrer')
        done()
      }
    }
  })
}, { name: 'swagger' })
