import WebSocket from 'ws'
import { mintToken } from '../lib/auth/token.js'
import { now } from './lib/clock.js'
import { Histogram } from './lib/histogram.js'
import { serve } from './lib/ipc.js'

/**
 * A load-generator process: opens its share of the clients, then counts (and in latency
 * mode, times) the broadcast frames they receive. Every client uses the same `ws` client,
 * so the cost of receiving is the same whatever server is measured; Socket.IO is spoken
 * as its wire protocol (Engine.IO v4 over WebSocket) rather than through socket.io-client,
 * whose heavier decoding would take CPU from the server on these shared cores.
 */
type Kind = 'gateway' | 'ws' | 'socketio'

interface ConnectRequest {
  kind: Kind
  url: string
  /** Index of this process's first client: user ids stay unique across processes. */
  from: number
  count: number
  concurrency: number
  secret?: string
  channel?: string
  localAddress?: string
  /** Subscribes with `rewind: n` and is ready only once the n rewound events arrived (bench/features.ts). */
  rewind?: number
}

const HANDSHAKE_TIMEOUT_MS = 15_000
const sockets: WebSocket[] = []
let kind: Kind = 'ws'
let timing = false
let received = 0
let expected = Infinity
let doneAt = 0
let histogram = new Histogram()
let dropped = 0
let onDone: (() => void) | undefined

const isSocketIoEvent = (data: Buffer): boolean => data[0] === 0x34 && data[1] === 0x32 // "42"

function sentAtOf (data: Buffer): number {
  if (kind === 'socketio') return (JSON.parse(data.toString('utf8', 2)) as [string, { payload: { sentAt: number } }])[1].payload.sentAt
  return (JSON.parse(data.toString()) as { payload: { sentAt: number } }).payload.sentAt
}

const PRESENCE_FRAME = '{"type":"presence"'

/** The one listener every ready client shares: count, maybe time, answer Engine.IO pings. */
function onBroadcast (this: WebSocket, data: Buffer): void {
  if (kind === 'socketio' && !isSocketIoEvent(data)) {
    if (data[0] === 0x32) this.send('3') // Engine.IO ping → pong
    return
  }
  // Presence counts (room:bench is a presence channel by default) are not broadcasts: counted,
  // they ended a phase early and left its last broadcasts unrecorded.
  if (kind !== 'socketio' && data.length > 18 && data.toString('latin1', 0, 18) === PRESENCE_FRAME) return
  received++
  if (timing) histogram.record(now() - sentAtOf(data))
  if (received === expected) {
    doneAt = now()
    onDone?.()
  }
}

function onDropped (): void { dropped++ }

/** Opens one client and resolves once it can receive broadcasts (for the gateway: subscribed). */
function connectOne (request: ConnectRequest, index: number): Promise<WebSocket> {
  const headers: Record<string, string> = {}
  if (request.kind === 'gateway') {
    const token = mintToken(request.secret ?? '', { sub: `u${index}`, ttlSeconds: 3600 })
    headers.authorization = `Bearer ${token}`
  }
  const ws = new WebSocket(request.url, {
    headers, perMessageDeflate: false, handshakeTimeout: HANDSHAKE_TIMEOUT_MS, localAddress: request.localAddress
  })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error('not ready in time')), HANDSHAKE_TIMEOUT_MS + 5000)
    let subscribed = false
    let rewound = 0
    const ready = () => {
      clearTimeout(timer)
      ws.removeAllListeners('message')
      ws.removeAllListeners('close')
      ws.removeAllListeners('error')
      ws.on('message', onBroadcast)
      ws.on('close', onDropped)
      ws.on('error', () => { /* followed by close */ })
      resolve(ws)
    }
    function fail (err: Error): void {
      clearTimeout(timer)
      ws.terminate()
      reject(err)
    }
    ws.on('error', fail)
    ws.on('close', (code) => fail(new Error(`closed ${code} before ready`)))
    if (request.kind === 'ws') ws.on('open', ready)
    ws.on('message', (data: Buffer) => {
      const text = data.toString()
      if (request.kind === 'gateway') {
        const frame = JSON.parse(text) as { type: string, id?: string }
        if (frame.type === 'system:connected') {
          const rewind = request.rewind === undefined ? {} : { rewind: request.rewind }
          ws.send(JSON.stringify({ type: 'subscribe', id: 'bench', payload: { channels: [request.channel], ...rewind } }))
        } else if (frame.type === 'subscribed' && frame.id === 'bench') {
          subscribed = true
          if (rewound >= (request.rewind ?? 0)) ready()
        } else if ((frame as { channel?: string }).channel === request.channel && request.rewind !== undefined) {
          // A rewound event comes after the `subscribed` reply (docs/protocol.md, "Subscribe").
          if (++rewound >= request.rewind && subscribed) ready()
        } else if (frame.type === 'error') {
          fail(new Error(`error frame: ${text.slice(0, 200)}`))
        }
      } else if (request.kind === 'socketio') {
        if (text.startsWith('0')) ws.send('40') // Engine.IO open → join the default namespace
        else if (text.startsWith('40')) ready()
        else if (text === '2') ws.send('3')
        else if (text.startsWith('44')) fail(new Error(`connect_error: ${text.slice(0, 200)}`))
      }
    })
  })
}

/**
 * Opens `count` clients, `concurrency` handshakes at a time. They stay open, unless
 * `churn`: then each is closed again as soon as it is ready (the warm-up churn), so
 * no more than `concurrency` are open at once.
 */
async function connectAll (request: ConnectRequest, churn = false) {
  kind = request.kind
  const started = now()
  let next = 0
  let ok = 0
  const errors = new Map<string, number>()
  const worker = async (): Promise<void> => {
    while (next < request.count) {
      const index = request.from + next++
      try {
        const ws = await connectOne(request, index)
        if (churn) await closeGracefully(ws)
        else sockets.push(ws)
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

/** Closes a ready client with a close handshake (not counted as dropped); resolves once it is gone. */
function closeGracefully (ws: WebSocket): Promise<void> {
  return new Promise((resolve) => {
    ws.removeListener('close', onDropped)
    const timer = setTimeout(() => { ws.terminate(); resolve() }, 10_000)
    ws.once('close', () => { clearTimeout(timer); resolve() })
    ws.close(1000)
  })
}

serve({
  connect: (request) => connectAll(request as unknown as ConnectRequest),
  churn: (request) => connectAll(request as unknown as ConnectRequest, true),
  /** Resets the counters: the next `wait` resolves after `perClient` frames on every open client. */
  arm: (request) => {
    timing = request.timing === true
    histogram = new Histogram()
    received = 0
    doneAt = 0
    expected = Number(request.perClient) * (sockets.length - dropped)
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
  status: () => ({ open: sockets.length - dropped, dropped }),
  close: () => {
    for (const ws of sockets) ws.terminate()
    return { closed: sockets.length }
  }
})
