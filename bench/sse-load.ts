import { type IncomingMessage, request as httpRequest } from 'node:http'
import { mintToken } from '../lib/auth/token.js'
import { now } from './lib/clock.js'
import { Histogram } from './lib/histogram.js'
import { serve } from './lib/ipc.js'

/**
 * The SSE load generator: the same ops as bench/load.ts (connect, churn, arm, wait,
 * histogram, status, close), over plain node:http responses parsed by hand. One cheap
 * client for every server, so the cost of receiving is the same whatever is measured
 * (the eventsource package would build a MessageEvent per event and take CPU from the
 * server on these shared cores). Only `event: bench` events count; system events,
 * comments and heartbeats are skipped.
 */
type Kind = 'gateway' | 'sse'

interface ConnectRequest {
  kind: Kind
  url: string
  from: number
  count: number
  concurrency: number
  secret?: string
  channel?: string
  localAddress?: string
}

const READY_TIMEOUT_MS = 20_000
const SENT_AT = '"sentAt":'

interface Stream { res: IncomingMessage, pending: string }
const streams: Stream[] = []
let timing = false
let received = 0
let expected = Infinity
let doneAt = 0
let histogram = new Histogram()
let dropped = 0
let onDone: (() => void) | undefined

function sentAtOf (block: string): number {
  const at = block.indexOf(SENT_AT)
  return at < 0 ? NaN : Number.parseFloat(block.slice(at + SENT_AT.length, at + SENT_AT.length + 24))
}

/** Whether the event in text[start, end) is `event: bench` (the space after the colon is optional: better-sse leaves it out). */
function isBench (text: string, start: number, end: number): boolean {
  const at = text.indexOf('event:', start)
  if (at < 0 || at >= end) return false
  const value = text.charCodeAt(at + 6) === 0x20 ? at + 7 : at + 6
  return text.startsWith('bench\n', value)
}

/** Counts (and in latency mode, times) the complete bench events of a chunk; keeps the rest. */
function onData (this: Stream, chunk: Buffer): void {
  const text = this.pending === '' ? chunk.toString('latin1') : this.pending + chunk.toString('latin1')
  let start = 0
  for (let end = text.indexOf('\n\n', start); end >= 0; end = text.indexOf('\n\n', start)) {
    if (isBench(text, start, end)) {
      received++
      if (timing) histogram.record(now() - sentAtOf(text.slice(start, end)))
      if (received === expected) {
        doneAt = now()
        onDone?.()
      }
    }
    start = end + 2
  }
  this.pending = start === text.length ? '' : text.slice(start)
}

function onDropped (): void { dropped++ }

/**
 * Opens one stream and resolves once it receives broadcasts: for the gateway after its
 * `system:connected` event (sent once the subscription is in place), for the others on
 * the response headers (they register the stream before writing them).
 */
function connectOne (request: ConnectRequest, index: number): Promise<Stream> {
  const headers: Record<string, string> = { accept: 'text/event-stream' }
  let path = new URL(request.url).pathname
  if (request.kind === 'gateway') {
    headers.authorization = `Bearer ${mintToken(request.secret ?? '', { sub: `u${index}`, ttlSeconds: 3600 })}`
    path += `?channels=${encodeURIComponent(request.channel ?? '')}`
  }
  const url = new URL(request.url)
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path, headers, agent: false, localAddress: request.localAddress })
    const timer = setTimeout(() => fail(new Error('not ready in time')), READY_TIMEOUT_MS)
    function fail (err: Error): void {
      clearTimeout(timer)
      req.destroy()
      reject(err)
    }
    req.on('error', fail)
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        fail(new Error(`HTTP ${res.statusCode}`))
        return
      }
      const stream: Stream = { res, pending: '' }
      const ready = () => {
        clearTimeout(timer)
        res.removeAllListeners('data')
        res.removeAllListeners('close')
        res.on('data', onData.bind(stream))
        res.on('close', onDropped)
        resolve(stream)
      }
      res.on('close', () => fail(new Error('closed before ready')))
      if (request.kind !== 'gateway') {
        ready()
        return
      }
      let head = ''
      res.on('data', (chunk: Buffer) => {
        head += chunk.toString('latin1')
        const at = head.indexOf('event: system:connected\n')
        const end = at < 0 ? -1 : head.indexOf('\n\n', at)
        if (end < 0) return
        ready()
        // Whatever followed the connected event in the same chunk is counted as usual.
        if (end + 2 < head.length) onData.call(stream, Buffer.from(head.slice(end + 2), 'latin1'))
      })
    })
    req.end()
  })
}

async function connectAll (request: ConnectRequest, churn = false) {
  const started = now()
  let next = 0
  let ok = 0
  const errors = new Map<string, number>()
  const worker = async (): Promise<void> => {
    while (next < request.count) {
      const index = request.from + next++
      try {
        const stream = await connectOne(request, index)
        if (churn) await closeStream(stream)
        else streams.push(stream)
        ok++
      } catch (err) {
        const message = (err as Error).message
        errors.set(message, (errors.get(message) ?? 0) + 1)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(request.concurrency, request.count) }, worker))
  return { ok, failed: request.count - ok, errors: Object.fromEntries(errors), ms: now() - started }
}

/** Ends a stream from the client side (not counted as dropped); resolves once its socket is closed. */
function closeStream (stream: Stream): Promise<void> {
  return new Promise((resolve) => {
    stream.res.removeListener('close', onDropped)
    stream.res.once('close', () => resolve())
    stream.res.destroy()
  })
}

serve({
  connect: (request) => connectAll(request as unknown as ConnectRequest),
  churn: (request) => connectAll(request as unknown as ConnectRequest, true),
  arm: (request) => {
    timing = request.timing === true
    histogram = new Histogram()
    received = 0
    doneAt = 0
    expected = Number(request.perClient) * (streams.length - dropped)
    return { expected }
  },
  wait: (request) => new Promise((resolve) => {
    const answer = () => {
      clearTimeout(timer)
      onDone = undefined
      resolve({ received, expected, doneAt, complete: received >= expected })
    }
    const timer = setTimeout(answer, Number(request.timeoutMs))
    if (received >= expected) answer()
    else onDone = answer
  }),
  histogram: () => ({ bins: histogram.sparse(), count: histogram.count, negative: histogram.negative }),
  status: () => ({ open: streams.length - dropped, dropped }),
  close: () => {
    for (const s of streams) {
      s.res.removeListener('close', onDropped)
      s.res.destroy()
    }
    return { closed: streams.length }
  }
})
