import { isUtf8 } from 'node:buffer'
import type { IncomingHttpHeaders } from 'node:http'
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
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    const unreadable = unreadableCoding(request.headers)
    if (unreadable !== undefined) return done(Object.assign(new Error(unreadable), { statusCode: 415 }), undefined)
    const bytes = body as Buffer
    if (bytes.length === 0) return done(new ClientError('bad_request', 'Body cannot be empty when content-type is set to \'application/json\''), undefined)
    // As a Kafka value: bytes that are not UTF-8 are no JSON text, not text to patch with U+FFFD (audit).
    if (!isUtf8(bytes)) return done(new ClientError('bad_request', 'body: not valid UTF-8'), undefined)
    const text = bytes.toString('utf8')
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

/**
 * Why a body cannot be read as sent (415), or undefined: JSON is read as UTF-8 only (RFC
 * 8259), and Fastify does not decode a Content-Encoding: a gzipped body was a 400 "not
 * valid JSON", and a `br` one taken as it was (audit). Neither header's value is repeated.
 */
function unreadableCoding (headers: IncomingHttpHeaders): string | undefined {
  const coding = headers['content-encoding']
  if (coding !== undefined && coding.trim().toLowerCase() !== 'identity') {
    return 'Content-Encoding is not supported: send the body uncompressed'
  }
  const charset = CHARSET.exec(headers['content-type'] ?? '')?.[1]
  // US-ASCII is UTF-8's subset: older clients declare it for plain ASCII JSON (review).
  if (charset !== undefined && !/^(utf-?8|us-ascii)$/i.test(charset)) return 'JSON bodies are read as UTF-8 only (charset=utf-8, or none)'
  return undefined
}

const CHARSET = /;\s*charset\s*=\s*"?([^";\s]*)/i
