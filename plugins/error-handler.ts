import type { FastifyError, FastifyInstance } from 'fastify'
import { BrokerUnavailableError } from '../lib/broker/broker.js'
import { ControlUnavailableError } from '../lib/broker/control.js'
import { ClientError } from '../lib/core/errors.js'
import { MissingFieldError } from '../lib/ingress/commerce-events.js'
import { PublishRefusedError } from '../lib/ingress/publish-limits.js'

const REASON: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Entity',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable'
}

/** At most one log line per this long for requests failed by an unavailable broker. */
const BROKER_DOWN_LOG_MS = 5000

const isControl = (url: string): boolean => url.startsWith('/realtime/disconnect') || url.startsWith('/realtime/revoke')

/**
 * A 503's message: a publish says what may not have happened, a disconnect or revoke what did
 * (the instance acted on its own connections first), a read just failed.
 */
function unavailableMessage (err: BrokerUnavailableError, publishing: boolean): string {
  if (err instanceof ControlUnavailableError) return `the event broker is unavailable: ${err.told}`
  if (!publishing) return 'the event broker is unavailable; try again'
  return err.mayHaveBeenTaken
    ? 'the event broker did not answer in time; the publish may still be taken: retry with the same Idempotency-Key to publish it at most once'
    : 'the event broker is unavailable; nothing was published'
}

/**
 * One error shape for every HTTP reply: `{statusCode, error, message}`. Client mistakes
 * keep their message (it names the field); 5xx details stay in the log.
 */
export function installErrorHandler (app: FastifyInstance): void {
  // While the broker is down every publish fails the same way (audit: thousands of stack
  // traces a minute, 5 MB of log over a few outages): one line every few seconds, counting the rest.
  const brokerDown = { loggedAt: -Infinity, since: 0 }
  app.setErrorHandler((err: FastifyError, request, reply) => {
    let statusCode = err.statusCode ?? 500
    let message = err.message
    if (err.validation !== undefined) {
      statusCode = 400
    } else if (err instanceof MissingFieldError || err instanceof ClientError) {
      statusCode = 400
    } else if (err instanceof PublishRefusedError) {
      statusCode = err.statusCode
    } else if (err instanceof BrokerUnavailableError) {
      statusCode = 503
      message = unavailableMessage(err, request.method === 'POST' && request.url.startsWith('/realtime/') && !isControl(request.url))
      reply.header('retry-after', '1')
    }
    if (err instanceof BrokerUnavailableError) {
      brokerDown.since++
      const now = Date.now()
      if (now - brokerDown.loggedAt >= BROKER_DOWN_LOG_MS) {
        const cause = (err.cause as Error | undefined)?.message
        request.log.error({ failed: brokerDown.since, cause }, `request failed: ${err.message} (${brokerDown.since} such failures since the last line)`)
        brokerDown.loggedAt = now
        brokerDown.since = 0
      }
    } else if (statusCode >= 500) {
      request.log.error({ err }, 'request failed')
      message = 'internal error'
    } else {
      request.log.info({ code: err.code, statusCode, message }, 'request refused')
    }
    reply.code(statusCode).send({ statusCode, error: REASON[statusCode] ?? 'Error', message })
  })

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] ?? '/'
    // A path that exists under other methods is a 405 naming them (RFC 9110 §15.5.6), not a 404.
    const allowed = ROUTED_METHODS.filter((method) => app.findRoute({ method, url: path }) !== null)
    if (allowed.length > 0) {
      reply.code(405).header('allow', allowed.join(', '))
        .send({ statusCode: 405, error: REASON[405], message: `${request.method} is not allowed on ${path}; use ${allowed.join(' or ')}` })
      return
    }
    reply.code(404).send({ statusCode: 404, error: REASON[404], message: `no route for ${request.method} ${path}` })
  })
}

/** The methods routes are declared with; HEAD comes with every GET, and OPTIONS is CORS's preflight. */
const ROUTED_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'] as const
