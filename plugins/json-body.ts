import type { FastifyInstance } from 'fastify'
import { ClientError } from '../lib/core/errors.js'
import { parseUntrustedJson, UntrustedJsonError } from '../lib/ingress/untrusted-json.js'

/**
 * JSON bodies parsed as the Kafka consumer parses message values (lib/ingress/untrusted-json.ts),
 * in place of Fastify's own parser: the same refusals (a body that is not JSON, a prototype
 * key, a number out of range), each a 400 in the usual error shape; a refused prototype key
 * or number says so. The body limit (413) is Fastify's, as before. Messages quote no value
 * from the body; a number out of range names the path of its field, as schema errors do.
 */
export function installJsonBodyParser (app: FastifyInstance): void {
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    const text = body as string
    if (text.length === 0) return done(new ClientError('bad_request', 'Body cannot be empty when content-type is set to \'application/json\''), undefined)
    try {
      done(null, parseUntrustedJson(text))
    } catch (err) {
      const kind = err instanceof UntrustedJsonError ? err.kind : 'syntax'
      const message = kind === 'prototype'
        ? `body: ${(err as Error).message}`
        : kind === 'number'
          ? (err as Error).message
          : 'Body is not valid JSON but content-type is set to \'application/json\''
      done(new ClientError('bad_request', message), undefined)
    }
  })
}
