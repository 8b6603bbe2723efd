import type { ServerFrame, Transport, TransportEvents } from './transport.js'

export interface EventStreamInit {
  fetch: typeof fetch
  token?: string
  /** The cursor to resume from, sent as `Last-Event-ID`. */
  lastEventId?: string
  /** The stream counts as dead after this long without a byte (heartbeats included). */
  idleTimeoutMs: number
}

/**
 * One Server-Sent Events stream from /sse, read with fetch rather than EventSource:
 * EventSource only delivers event types it was told about in advance (there is no
 * wildcard), so `on('*')` and types the app never named would be lost over SSE. With
 * fetch every event arrives, the token travels in the Authorization header instead of
 * the URL, and a refusal's HTTP status is visible (401 vs 403).
 */
export function openEventStream (url: string, init: EventStreamInit, events: TransportEvents): Transport {
  const controller = new AbortController()
  let done = false
  let idle: ReturnType<typeof setTimeout> | undefined

  const finish = (status: number | undefined, reason: string): void => {
    if (done) return
    done = true
    clearTimeout(idle)
    controller.abort()
    events.closed({ status, reason })
  }
  const touch = (): void => {
    clearTimeout(idle)
    idle = setTimeout(() => finish(undefined, 'stream idle'), init.idleTimeoutMs)
  }

  const headers: Record<string, string> = { accept: 'text/event-stream' }
  if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`
  if (init.lastEventId !== undefined) headers['last-event-id'] = init.lastEventId
  touch()
  init.fetch(url, { headers, signal: controller.signal }).then(async (res) => {
    if (res.status !== 200 || res.body === null) {
      const text = await res.text().catch(() => '')
      return finish(res.status, reasonOf(text, res.status))
    }
    const reader = res.body.getReader()
    const decoder = new TextDecoder()
    const parse = eventStreamParser((frame) => { if (!done) events.frame(frame) })
    for (;;) {
      const { value, done: ended } = await reader.read()
      if (ended || done) break
      touch()
      parse(decoder.decode(value, { stream: true }))
    }
    finish(undefined, 'stream ended')
  }).catch((err: unknown) => finish(undefined, err instanceof Error ? err.message : String(err)))

  return {
    kind: 'sse',
    send: () => false,
    close (): void {
      if (done) return
      done = true
      clearTimeout(idle)
      controller.abort()
    }
  }
}

/** The `message` of the gateway's `{statusCode,error,message}` replies, else the status. */
function reasonOf (text: string, status: number): string {
  try {
    const message = JSON.parse(text)?.message
    if (typeof message === 'string') return message
  } catch { /* not JSON */ }
  return `HTTP ${status}`
}

/**
 * The text/event-stream format (HTML Living Standard §9.2.6) turned into frames of the
 * WebSocket shape: the event name is the type; an event's data carries its channel.
 */
function eventStreamParser (emit: (frame: ServerFrame) => void): (chunk: string) => void {
  let buffer = ''
  let type = ''
  let id: string | undefined
  let data: string[] = []

  const dispatch = (): void => {
    if (data.length > 0) emit(toFrame(type === '' ? 'message' : type, data.join('\n'), id))
    type = ''
    id = undefined
    data = []
  }
  const line = (text: string): void => {
    if (text === '') return dispatch()
    if (text.startsWith(':')) return // comment: a heartbeat
    const colon = text.indexOf(':')
    const field = colon < 0 ? text : text.slice(0, colon)
    let value = colon < 0 ? '' : text.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (field === 'event') type = value
    else if (field === 'data') data.push(value)
    else if (field === 'id') id = value
  }

  return (chunk: string) => {
    buffer += chunk
    let end
    while ((end = buffer.indexOf('\n')) >= 0) {
      line(buffer.slice(0, end).replace(/\r$/, ''))
      buffer = buffer.slice(end + 1)
    }
  }
}

function toFrame (type: string, text: string, cursor: string | undefined): ServerFrame {
  let data: any = text
  try { data = JSON.parse(text) } catch { /* plain text data */ }
  const hasChannel = typeof data === 'object' && data !== null && typeof data.channel === 'string'
  // An event carries an offset, whatever its type (a service may publish type `presence`);
  // presence counts and system:reset name a channel but carry none.
  const isEvent = hasChannel && typeof data.offset === 'number' && !type.startsWith('system:')
  if (isEvent) return { type, channel: data.channel, offset: data.offset, payload: data.payload, ts: data.ts, cursor }
  if (hasChannel && (type === 'presence' || type === 'system:reset')) return { type, channel: data.channel, payload: data.payload, cursor }
  return { type, payload: data, cursor }
}
