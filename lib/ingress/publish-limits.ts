import type { EventDraft } from '../core/event.js'

/**
 * What any publish, over HTTP or from Kafka, may ask of the server (docs/protocol.md,
 * "Limits"). Checked once here, on the drafts about to be published, so both ingresses
 * refuse exactly the same things: HTTP with 400/413, Kafka by dead-lettering the message.
 */
export interface PublishLimits {
  /** A payload's JSON size, in bytes (EVENT_MAX_BYTES). */
  eventMaxBytes: number
  /** The sum of every event's payload size in one publish: payload × channels (PUBLISH_MAX_BYTES). */
  publishMaxBytes: number
}

/** Nesting deeper than this is refused: encoding it again (history, every transport) would risk the stack. */
export const MAX_PAYLOAD_DEPTH = 64

/** Event types starting with this are the gateway's own (system:connected, system:reset, …). */
export const RESERVED_TYPE_PREFIX = 'system:'

export type RefusalKind = 'too_deep' | 'too_large' | 'reserved_type'

/** A publish the limits refuse: `statusCode` is the HTTP answer, `field` names what is wrong. */
export class PublishRefusedError extends Error {
  constructor (readonly kind: RefusalKind, readonly statusCode: 400 | 413, readonly field: string, detail: string) {
    super(`${field}: ${detail}`)
    this.name = 'PublishRefusedError'
  }
}

/**
 * Throws PublishRefusedError for the first draft that breaks a limit. `payloadField` names
 * the payload in the caller's body (`payload` on /realtime/publish; '' where the body's own
 * fields are the payload, as on /realtime/broadcast/order), so the message names the field.
 * Measuring a payload means encoding it: each draft keeps that JSON (`payloadJson`), so
 * the broker and the transports do not encode it again. A payload shared by several
 * drafts (an order's, sent to three channels) is encoded once.
 */
export function checkDrafts (drafts: readonly EventDraft[], limits: PublishLimits, payloadField = 'payload'): void {
  const encoded = new Map<object, { json: string, size: number }>()
  let total = 0
  for (const draft of drafts) {
    if (draft.type.startsWith(RESERVED_TYPE_PREFIX)) {
      throw new PublishRefusedError('reserved_type', 400, 'type', `types starting with ${RESERVED_TYPE_PREFIX} are reserved for the gateway`)
    }
    let payload = encoded.get(draft.payload)
    if (payload === undefined) {
      const tooDeep = deepestPath(draft.payload, MAX_PAYLOAD_DEPTH)
      if (tooDeep !== null) {
        const field = [payloadField, tooDeep].filter((p) => p !== '').join('.') || 'payload'
        throw new PublishRefusedError('too_deep', 400, field, `nested deeper than ${MAX_PAYLOAD_DEPTH} levels`)
      }
      const json = JSON.stringify(draft.payload)
      payload = { json, size: Buffer.byteLength(json) }
      if (payload.size > limits.eventMaxBytes) {
        throw new PublishRefusedError('too_large', 413, payloadField || 'payload',
          `${payload.size} bytes of JSON, over the ${limits.eventMaxBytes} an event may carry (EVENT_MAX_BYTES)`)
      }
      encoded.set(draft.payload, payload)
    }
    draft.payloadJson = payload.json
    total += payload.size
    if (total > limits.publishMaxBytes) {
      throw new PublishRefusedError('too_large', 413, payloadField || 'payload',
        `this publish would fan out more than ${limits.publishMaxBytes} bytes of payload (payload size × channels, PUBLISH_MAX_BYTES)`)
    }
  }
}

/**
 * The top-level key under which `value` nests deeper than `maxDepth` levels (the object
 * itself is level 1), '' if the object itself is too deep at the top, or null if it is not
 * too deep. A hostile payload is nested thousands deep, which is the point: the walk never
 * goes below `maxDepth + 1` levels, so its recursion stays that shallow whatever it is given.
 * (It used to carry the top-level key down an explicit stack, with '' meaning "none yet", so
 * under a top-level key that is itself '' it named a nested key instead.)
 */
export function deepestPath (value: unknown, maxDepth: number): string | null {
  if (typeof value !== 'object' || value === null) return null
  if (maxDepth < 1) return ''
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) if (nestsBelow(value[i], 2, maxDepth)) return String(i)
    return null
  }
  for (const key in value) {
    if (Object.hasOwn(value, key) && nestsBelow((value as Record<string, unknown>)[key], 2, maxDepth)) return key
  }
  return null
}

/** Whether `node`, at level `depth`, is an object nesting deeper than `maxDepth`. */
function nestsBelow (node: unknown, depth: number, maxDepth: number): boolean {
  if (typeof node !== 'object' || node === null) return false
  if (depth > maxDepth) return true
  if (Array.isArray(node)) {
    for (let i = 0; i < node.length; i++) if (nestsBelow(node[i], depth + 1, maxDepth)) return true
    return false
  }
  for (const key in node) {
    if (Object.hasOwn(node, key) && nestsBelow((node as Record<string, unknown>)[key], depth + 1, maxDepth)) return true
  }
  return false
}
