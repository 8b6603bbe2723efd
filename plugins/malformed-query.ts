import type { FastifyInstance } from 'fastify'
import { closeAfterReply } from '../lib/transport/answered-upgrade.js'

/**
 * Whether a URL's query string decodes: every `%` starts an escape of two hex digits, and
 * the escaped bytes are UTF-8. The router refuses a malformed path (app.ts,
 * `frameworkErrors`), but the query parser keeps a bad escape as it came, and a route's
 * error message could then echo it: `invalid channel name: %E0%A4%A`.
 */
export function queryDecodes (query: string): boolean {
  if (!query.includes('%')) return true
  try {
    decodeURIComponent(query)
    return true
  } catch {
    return false
  }
}

/**
 * A request whose query string does not decode is a 400 "malformed URL" in the usual error
 * shape, before any route or authentication hook, naming no part of the URL (CONTRACT §1:
 * it may carry a token). Root-level, so it runs before every route's own hooks, WebSocket
 * upgrades included.
 */
export function installMalformedQueryCheck (app: FastifyInstance): void {
  app.addHook('onRequest', (request, reply, done) => {
    const url = request.url
    const start = url.indexOf('?')
    if (start === -1 || queryDecodes(url.slice(start + 1))) {
      done()
      return
    }
    // Answered here: the route and its hooks do not run (no done()).
    reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: 'malformed URL' })
    closeAfterReply(request.raw, reply.raw)
  })
}
