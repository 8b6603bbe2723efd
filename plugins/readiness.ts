import fp from 'fastify-plugin'
import { Readiness } from '../lib/ops/readiness.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Plugins that open a dependency register its check here; /health/ready reads it. */
    readiness: Readiness
  }
}

export default fp(async (app) => {
  app.decorate('readiness', new Readiness())
}, { name: 'readiness' })
