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
  constructor (message: string, readonly kind: 'syntax' | 'prototype' | 'number') {
    super(message)
  }
}

const PROTOTYPE_KEYS = 'a key named "__proto__", or a "constructor" key holding "prototype", is not accepted (it would set an object\'s prototype)'

/**
 * A number literal JSON.parse can only read as ±Infinity (`1e999`, 400 digits): it would be
 * stored and sent as `null`, so the event would say something its publisher never said.
 * Such a literal has an exponent of three digits or more, or a hundred digits in a row (a
 * finite number needs at least 210 mantissa digits to overflow with a two-digit exponent);
 * only a text holding one (or a string that looks like one) pays for the walk that finds it.
 */
const MAYBE_OUT_OF_RANGE = /\d{100}|[eE][+-]?\d{3}/

/**
 * Parses `text` (a leading BOM is skipped); throws UntrustedJsonError (`syntax`: not JSON,
 * with the parser's message; `prototype`: such a key; `number`: a number out of range,
 * with the path of the field holding it).
 */
export function parseUntrustedJson (text: string): unknown {
  let value: unknown
  try {
    // One pass: JSON.parse, then a scan only when the text names such a key.
    value = parse(text, undefined, { protoAction: 'error', constructorAction: 'error' })
  } catch (err) {
    const message = (err as Error).message
    if (message.startsWith('Object contains forbidden')) throw new UntrustedJsonError(PROTOTYPE_KEYS, 'prototype')
    throw new UntrustedJsonError(message, 'syntax')
  }
  if (MAYBE_OUT_OF_RANGE.test(text)) {
    const path = pathOfInfinity(value)
    if (path !== null) {
      throw new UntrustedJsonError(`${path}: a number beyond ±1.8e308, which JSON numbers here cannot carry (it would arrive as null)`, 'number')
    }
  }
  return value
}

interface Visit { value: unknown, key: string, parent: Visit | null }

/**
 * The dotted path (`payload.items.2.price`; `(value)` for the value itself) of the first
 * ±Infinity in `root`, or null. An explicit stack, so a value nested thousands deep (refused
 * later for its depth) cannot overflow the call stack here.
 */
function pathOfInfinity (root: unknown): string | null {
  const stack: Visit[] = [{ value: root, key: '', parent: null }]
  while (stack.length > 0) {
    const visit = stack.pop() as Visit
    const { value } = visit
    if (typeof value === 'number') {
      if (!Number.isFinite(value)) return pathOf(visit)
    } else if (typeof value === 'object' && value !== null) {
      const keys = Object.keys(value)
      for (let i = keys.length - 1; i >= 0; i--) {
        stack.push({ value: (value as Record<string, unknown>)[keys[i]], key: keys[i], parent: visit })
      }
    }
  }
  return null
}

function pathOf (visit: Visit): string {
  const keys: string[] = []
  for (let v: Visit | null = visit; v !== null && v.parent !== null; v = v.parent) keys.push(v.key)
  const path = keys.reverse().join('.')
  if (path === '') return '(value)'
  return path.length > 200 ? `${path.slice(0, 200)}…` : path
}
