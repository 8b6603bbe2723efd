import { parse } from 'secure-json-parse'

/**
 * JSON from outside (an HTTP body, a Kafka message value), as both ingresses take it. A key
 * `__proto__`, or a `constructor` holding `prototype`, is refused: copied into an object
 * (the commerce mappings copy an order's fields), such a key would set that object's
 * prototype instead of being a field of it, and the field would vanish from the event.
 * HTTP refused these bodies before (Fastify's own parser, with a message that called them
 * not JSON); Kafka took them. Now both refuse them alike, saying why.
 */
export class UntrustedJsonError extends Error {
  constructor (message: string, readonly kind: 'syntax' | 'prototype') {
    super(message)
  }
}

const PROTOTYPE_KEYS = 'a key named "__proto__", or a "constructor" key holding "prototype", is not accepted (it would set an object\'s prototype)'

/** Parses `text` (a leading BOM is skipped); throws UntrustedJsonError (`syntax`: not JSON, with the parser's message; `prototype`: such a key). */
export function parseUntrustedJson (text: string): unknown {
  try {
    // One pass: JSON.parse, then a scan only when the text names such a key.
    return parse(text, undefined, { protoAction: 'error', constructorAction: 'error' })
  } catch (err) {
    const message = (err as Error).message
    if (message.startsWith('Object contains forbidden')) throw new UntrustedJsonError(PROTOTYPE_KEYS, 'prototype')
    throw new UntrustedJsonError(message, 'syntax')
  }
}
