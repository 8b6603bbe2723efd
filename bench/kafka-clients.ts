import WebSocket from 'ws'
import { mintToken } from '../lib/auth/token.js'
import { now } from './lib/clock.js'
import { Histogram } from './lib/histogram.js'
import { serve } from './lib/ipc.js'

/**
 * The Kafka benchmark's clients, in a process of their own: one connection per user
 * (each holds its own `user:<id>`), an admin connection on `admin` and `orders`, and a
 * few connections holding the public channels, so every channel the traffic reaches
 * has exactly one subscriber and delivered events can be checked against what the
 * gateway had to publish: the count per channel, and offsets that go up by one.
 *
 * Receiving costs CPU on the same two cores as the gateway: a frame is not JSON-parsed
 * for the count, only its channel and offset are read from its head (the gateway writes
 * `{"type","channel","offset",…}` in that order, docs/protocol.md, WebSocket).
 */
interface ConnectRequest {
  url: string
  secret: string
  users: string[]
  admin: string[]
  public: string[]
  /** Public channels per connection, under MAX_CHANNELS_PER_CONNECTION. */
  perConnection: number
}

const HANDSHAKE_TIMEOUT_MS = 15_000
const SETTLE_MS = 300
const sockets: WebSocket[] = []
let dropped = 0

let timing = false
let histogram = new Histogram()
let expectedPerChannel = new Map<string, number>()
let expectedTotal = Infinity
let received = 0
let firstAt = 0
let lastAt = 0
/** Per channel: count received and last offset, to find gaps, repeats and reordering. */
let seen = new Map<string, { count: number, offset: number }>()
let gaps = 0
let onDone: (() => void) | undefined

const CHANNEL = '"channel":"'
const OFFSET = '"offset":'
const SENT_AT = '"sentAt":'

function onFrame (data: Buffer): void {
  // Presence and system frames have no offset; events always start with type, channel, offset.
  const head = data.toString('latin1', 0, Math.min(data.length, 512))
  const c = head.indexOf(CHANNEL)
  if (c < 0) return
  const cEnd = head.indexOf('"', c + CHANNEL.length)
  if (head.startsWith(OFFSET, cEnd + 2) === false) return
  const channel = head.slice(c + CHANNEL.length, cEnd)
  const offset = parseInt(head.slice(cEnd + 2 + OFFSET.length, cEnd + 2 + OFFSET.length + 20), 10)
  const at = now()
  if (firstAt === 0) firstAt = at
  if (received < expectedTotal) lastAt = at
  received++
  const s = seen.get(channel)
  if (s === undefined) {
    seen.set(channel, { count: 1, offset })
  } else {
    if (offset !== s.offset + 1) gaps++
    s.count++
    s.offset = offset
  }
  if (timing) {
    const text = data.toString('utf8')
    const i = text.lastIndexOf(SENT_AT)
    if (i >= 0) histogram.record(at - parseFloat(text.slice(i + SENT_AT.length, i + SENT_AT.length + 30)))
  }
  if (received >= expectedTotal) onDone?.()
}

function connectOne (url: string, token: string, channels: string[]): Promise<WebSocket> {
  const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false, handshakeTimeout: HANDSHAKE_TIMEOUT_MS })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error('not ready in time')), HANDSHAKE_TIMEOUT_MS + 5000)
    const ready = () => {
      clearTimeout(timer)
      ws.removeAllListeners()
      ws.on('message', onFrame)
      ws.on('close', () => { dropped++ })
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
    ws.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as { type: string, id?: string }
      if (frame.type === 'system:connected') {
        // A first frame, as the browser client sends one: until it, a connection's own
        // channel holds its events (up to 1 s; docs/protocol.md, resuming).
        if (channels.length === 0) ws.send(JSON.stringify({ type: 'system:ping', id: 'bench' }))
        else ws.send(JSON.stringify({ type: 'subscribe', id: 'bench', payload: { channels } }))
      } else if ((frame.type === 'subscribed' || frame.type === 'system:pong') && frame.id === 'bench') {
        ready()
      } else if (frame.type === 'error') {
        fail(new Error(`error frame: ${data.toString().slice(0, 200)}`))
      }
    })
  })
}

async function connectAll (r: ConnectRequest): Promise<{ connected: number }> {
  const token = (sub: string, roles: string[] = []) => mintToken(r.secret, { sub, roles, ttlSeconds: 3600 })
  const plan: Array<[string, string[]]> = r.users.map((u) => [token(u), []])
  plan.push([token('bench-admin', ['admin']), r.admin])
  for (let i = 0; i < r.public.length; i += r.perConnection) plan.push([token(`bench-public-${i}`), r.public.slice(i, i + r.perConnection)])
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < plan.length) {
      const [t, channels] = plan[next++]
      sockets.push(await connectOne(r.url, t, channels))
    }
  }
  await Promise.all(Array.from({ length: 20 }, worker))
  return { connected: sockets.length }
}

serve({
  connect: async (request) => await connectAll(request as unknown as ConnectRequest),
  /** Resets the counters; the next `wait` resolves once every expected event came (or on its timeout). */
  arm: (request) => {
    expectedPerChannel = new Map(Object.entries(request.perChannel as Record<string, number>))
    expectedTotal = [...expectedPerChannel.values()].reduce((a, b) => a + b, 0)
    timing = request.timing === true
    histogram = new Histogram()
    seen = new Map()
    received = 0
    firstAt = 0
    lastAt = 0
    gaps = 0
    return { expected: expectedTotal }
  },
  wait: (request) => new Promise((resolve) => {
    const answer = () => {
      clearTimeout(timer)
      onDone = undefined
      const wrong: string[] = []
      for (const [channel, want] of expectedPerChannel) {
        const got = seen.get(channel)?.count ?? 0
        if (got !== want) wrong.push(`${channel}: ${got} of ${want}`)
      }
      for (const channel of seen.keys()) if (!expectedPerChannel.has(channel)) wrong.push(`${channel}: not expected`)
      resolve({ received, expected: expectedTotal, firstAt, lastAt, gaps, wrongChannels: wrong.length, wrong: wrong.slice(0, 5), dropped })
    }
    // Once all came, a moment more: an event past the expected count (a redelivery) is counted too.
    const settle = () => { onDone = undefined; clearTimeout(timer); setTimeout(answer, SETTLE_MS) }
    const timer = setTimeout(answer, Number(request.timeoutMs))
    if (received >= expectedTotal) settle()
    else onDone = settle
  }),
  histogram: () => ({ bins: histogram.sparse(), count: histogram.count, negative: histogram.negative }),
  /** This process's CPU time, µs (receiving costs the same two cores the gateway runs on). */
  cpu: () => ({ ...process.cpuUsage() }),
  close: () => {
    for (const ws of sockets) ws.terminate()
    return { closed: sockets.length }
  }
})
