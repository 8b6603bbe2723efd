import fc from 'fast-check'
import t from 'tap'
import { ClientFrames } from '../../lib/transport/protocol.js'
import { post, serviceToken, sleep, startServer, token, WsClient } from '../support/helper.js'

/**
 * Arbitrary frames over a real WebSocket against a listening app (docs/protocol.md, WebSocket).
 * After any sequence of them, every answer was a frame of the protocol (errors with a known
 * code, never `internal`), and the connection either still works (a ping answers; a subscribe
 * and an HTTP publish round trip arrives) or was closed with a documented close code.
 * A failure prints fast-check's seed and path: rerun with `{ seed, path }` to replay it.
 */
const CLIENT_CODES = ['bad_request', 'forbidden', 'rate_limited', 'too_many_channels']
/** 1008 flooding, 1009 a frame over WS_MAX_PAYLOAD_BYTES: what a client can bring on itself. */
const SELF_INFLICTED_CLOSES = [1008, 1009]
const TYPES = Object.keys(ClientFrames)

const anyValue = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom('room:a', 'event:1', 'user:p1', 'user:other', 'admin', 'orders', 'a,b', '', -1, 0, 1.5, 2 ** 60, null, [], {})
)
const frameLike = fc.record({
  type: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...TYPES) }, { weight: 1, arbitrary: fc.string({ maxLength: 20 }) }),
  id: fc.option(anyValue, { nil: undefined }),
  payload: fc.oneof(anyValue, fc.record({
    channels: fc.oneof(anyValue, fc.array(fc.oneof(anyValue, fc.stringMatching(/^room:[a-z]{1,3}$/)), { maxLength: 140 })),
    since: fc.oneof(anyValue, fc.dictionary(fc.constantFrom('room:a', 'event:1', 'user:p1'), fc.record({ offset: anyValue, epoch: anyValue }, { requiredKeys: [] }))),
    rewind: anyValue,
    room: anyValue,
    channel: anyValue,
    token: anyValue
  }, { requiredKeys: [] }))
}, { requiredKeys: [] })

/** What a client may send: protocol-like JSON, any text, any bytes as a binary frame, now and then one too large. */
const clientFrame = (oversized: boolean) => fc.oneof(
  { weight: 6, arbitrary: frameLike.map((f): string | Buffer => JSON.stringify(f)) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 300 }) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)) },
  { weight: oversized ? 1 : 0, arbitrary: fc.constant('x'.repeat(70 * 1024)) }
)

interface Verdict { closed?: number }

/**
 * Resolves once a ping of ours is answered. A frame refused by the rate limit is answered
 * `rate_limited` (with its id), not a pong, so after a flood the ping is sent again, every
 * 300 ms, until the bucket lets one through; rejects after 15 s (a hang).
 */
async function probe (client: WsClient, run: number): Promise<Verdict> {
  const ids = new Set<string>()
  let timer: NodeJS.Timeout | undefined
  let onMessage: ((data: unknown) => void) | undefined
  try {
    return await new Promise<Verdict>((resolve, reject) => {
      onMessage = (data) => {
        const frame = JSON.parse(String(data)) as { type?: string, id?: unknown }
        if (frame.type === 'system:pong' && ids.has(frame.id as string)) resolve({})
      }
      client.socket.on('message', onMessage)
      const deadline = Date.now() + 15_000
      const ping = (): void => {
        // Closed: the caller's race has its answer; this one stays unsettled, with no timer left.
        if (client.socket.readyState !== client.socket.OPEN) return
        if (Date.now() > deadline) return reject(new Error('no pong and no close within 15 s'))
        const id = `probe-${run}-${ids.size}`
        ids.add(id)
        client.send({ type: 'system:ping', id })
        timer = setTimeout(ping, 300)
      }
      ping()
    })
  } finally {
    clearTimeout(timer)
    if (onMessage !== undefined) client.socket.off('message', onMessage)
  }
}

/** Sends the frames, then checks every answer and what the connection can still do. */
async function exercise (url: string, client: WsClient, frames: Array<string | Buffer>, run: number): Promise<Verdict> {
  const closed = client.closed.then((c) => ({ closed: c.code }))
  for (const frame of frames) {
    if (client.socket.readyState !== client.socket.OPEN) break
    client.socket.send(frame)
  }
  const answered = await Promise.race([probe(client, run), closed])
  for (const frame of client.frames) {
    if (frame.type === 'error' && !CLIENT_CODES.includes(frame.payload?.code)) throw new Error(`error frame ${JSON.stringify(frame)}`)
  }
  if ('closed' in answered) {
    if (!SELF_INFLICTED_CLOSES.includes(answered.closed as number)) throw new Error(`closed with ${answered.closed}`)
    return answered
  }
  // Still usable: a subscribe and a publish round trip, once the bucket holds a few frames again.
  await sleep(100)
  const room = `room:round-${run}`
  const ack = await client.request({ type: 'subscribe', payload: { channels: [room] } })
  if (ack.type !== 'subscribed') {
    // Arbitrary subscribes may have filled the connection's channels: a protocol answer too.
    if (ack.payload?.code !== 'too_many_channels') throw new Error(`subscribe answered ${JSON.stringify(ack)}`)
    return {}
  }
  const sent = await post(`${url}/realtime/publish`, serviceToken(), { channel: room, type: 'round:trip', payload: { run } })
  if (sent.status !== 202) throw new Error(`publish answered ${sent.status}`)
  const event = await client.next((f) => f.channel === room, 10_000)
  if (event.payload.run !== run) throw new Error(`round trip brought ${JSON.stringify(event)}`)
  return {}
}

t.test('any frames, rate limit out of the way: every answer is the protocol\'s, and the connection still works', async (t) => {
  const { url, wsUrl } = await startServer(t, { WS_RATE_LIMIT_PER_SECOND: 1_000_000, WS_RATE_LIMIT_BURST: 1_000_000, HTTP_RATE_LIMIT_PER_MINUTE: 1_000_000 })
  let run = 0
  await fc.assert(fc.asyncProperty(fc.array(clientFrame(false), { minLength: 1, maxLength: 15 }), async (frames) => {
    const client = await WsClient.connect(t, wsUrl, token('p1'))
    try {
      const verdict = await exercise(url, client, frames, ++run)
      if (verdict.closed !== undefined) throw new Error(`closed with ${verdict.closed} though no limit was in the way`)
    } finally {
      client.socket.terminate()
    }
  }), { numRuns: 25 })
  t.pass('usable after every run')
})

t.test('any frames at default limits, in floods and with frames too large: still usable or closed with 1008 / 1009', async (t) => {
  const { url, wsUrl } = await startServer(t, { HTTP_RATE_LIMIT_PER_MINUTE: 1_000_000 })
  const closes = new Map<string, number>()
  let run = 1000
  const flood = fc.tuple(fc.array(clientFrame(true), { minLength: 1, maxLength: 30 }), fc.integer({ min: 0, max: 300 }))
    .map(([frames, pings]) => [...frames, ...Array.from({ length: pings }, () => '{"type":"system:ping"}')])
  await fc.assert(fc.asyncProperty(flood, async (frames) => {
    const client = await WsClient.connect(t, wsUrl, token(`flood-${run}`))
    try {
      const verdict = await exercise(url, client, frames, ++run)
      const key = verdict.closed === undefined ? 'open' : String(verdict.closed)
      closes.set(key, (closes.get(key) ?? 0) + 1)
    } finally {
      client.socket.terminate()
    }
  }), {
    numRuns: 12,
    // Always among the runs: rate limited but not yet flooding (100 burst + 20 strikes), and flooding.
    examples: [[Array.from({ length: 110 }, () => '{"type":"system:ping"}')], [Array.from({ length: 300 }, () => '{"type":"system:ping"}')]]
  })
  t.comment(`outcomes: ${JSON.stringify(Object.fromEntries(closes))}`)
  t.pass('usable or closed as documented')
})
