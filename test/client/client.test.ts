import { test, type Test } from 'tap'
import WebSocket from 'ws'
import type { RealtimeEvent, WebSocketConstructor } from '../../client/realtime-client.js'
import { gatedToken, notify, publish, watch } from '../support/client-watch.js'
import { post, serviceToken, sleep, startServer, token, WsClient } from '../support/helper.js'
import { eventually, OwnRedis } from '../support/redis-fixture.js'
import { freePort } from '../support/ports.js'

/**
 * The browser client (client/) in Node against a real gateway: real sockets and
 * streams, the `ws` package standing in for the browser's WebSocket.
 */

const offsets = (events: RealtimeEvent[]) => events.map((e) => e.offset)

test('WebSocket: events of its channels and of its own user channel, subscribe and unsubscribe', async (t) => {
  const { url } = await startServer(t)
  const w = watch(t, { url, token: token('c1'), channels: ['product:1'] })
  const orders: RealtimeEvent[] = []
  w.client.on('order:placed', (e) => orders.push(e))
  await w.until('open', () => w.client.state === 'open')
  t.equal(w.client.transport, 'ws')
  t.same(w.states.slice(0, 2), ['connecting', 'open'])
  t.equal(w.client.userId, 'c1')

  await publish(t, url, 'product:1', 'order:placed', { n: 1 })
  await notify(t, url, 'c1', 'hello')
  await w.until('both events', () => w.events.length === 2)
  t.match(w.events[0], { type: 'order:placed', channel: 'product:1', offset: 1, payload: { n: 1 }, ts: String })
  t.match(w.events[1], { type: 'notification', channel: 'user:c1', payload: { message: 'hello' } })
  t.equal(orders.length, 1, 'a type handler gets its type only')

  await w.client.subscribe('product:2')
  await publish(t, url, 'product:2', 'price:changed', { price: 3 })
  await w.until('the new channel', () => w.on('product:2').length === 1)

  await w.client.unsubscribe('product:1')
  await publish(t, url, 'product:1', 'order:placed', { n: 2 })
  await publish(t, url, 'product:2', 'price:changed', { price: 4 })
  await w.until('the later event', () => w.on('product:2').length === 2)
  t.same(w.on('product:1').map((e) => e.payload.n), [1], 'nothing after unsubscribe')
  t.same(w.errors, [])
})

for (const transport of ['ws', 'sse'] as const) {
  test(`${transport}: reconnects after the server drops it and resumes without losing events`, async (t) => {
    const { app, url } = await startServer(t)
    const gate = gatedToken(token('c2'))
    const w = watch(t, { url, token: gate.token, channels: ['product:r'], transports: [transport] })
    await w.until('open', () => w.client.state === 'open')
    t.equal(w.client.transport, transport)
    await publish(t, url, 'product:r', 'tick', { n: 1 })
    await publish(t, url, 'product:r', 'tick', { n: 2 })
    await notify(t, url, 'c2', 'before')
    await w.until('the first events', () => w.events.length === 3)

    gate.hold()
    app.hub.closeAll(1012, 'server restarting')
    await w.until('reconnecting', () => w.client.state === 'reconnecting')
    for (let n = 3; n <= 5; n++) await publish(t, url, 'product:r', 'tick', { n })
    await notify(t, url, 'c2', 'while away 1')
    await notify(t, url, 'c2', 'while away 2')
    gate.release()

    await w.until('open again', () => w.opens.length === 2)
    await w.until('the missed events', () => w.on('product:r').length >= 5 && w.on('user:c2').length >= 3)
    await publish(t, url, 'product:r', 'tick', { n: 6 })
    await w.until('a live event after the resume', () => w.on('product:r').length >= 6)
    t.same(offsets(w.on('product:r')), [1, 2, 3, 4, 5, 6], 'every event once, in order')
    t.same(w.on('product:r').map((e) => e.payload.n), [1, 2, 3, 4, 5, 6])
    t.same(w.on('user:c2').map((e) => e.payload.message), ['before', 'while away 1', 'while away 2'], 'the user channel resumed too')
    t.same(offsets(w.on('user:c2')), [1, 2, 3])
    t.same(w.recoveries, [], 'nothing was lost, so no recovery notice')
    t.match(w.opens[1], { transport, resumed: true })
    t.ok(w.states.indexOf('reconnecting') < w.states.lastIndexOf('open'), `states: ${w.states.join(' → ')}`)
  })

  test(`${transport}: tells the app when history no longer covers the gap (recovered: false)`, async (t) => {
    const { app, url } = await startServer(t, { HISTORY_SIZE: 2 })
    const gate = gatedToken(token('c3'))
    const w = watch(t, { url, token: gate.token, channels: ['product:h'], transports: [transport] })
    await w.until('open', () => w.client.state === 'open')
    await publish(t, url, 'product:h', 'tick', { n: 1 })
    await w.until('the first event', () => w.events.length === 1)

    gate.hold()
    app.hub.closeAll(1012, 'server restarting')
    await w.until('reconnecting', () => w.client.state === 'reconnecting')
    for (let n = 2; n <= 5; n++) await publish(t, url, 'product:h', 'tick', { n })
    gate.release()

    await w.until('the recovery notice', () => w.recoveries.length > 0)
    t.equal(w.recoveries[0].recovered, false)
    t.same(w.recoveries[0].channels, ['product:h'], 'only the channel history no longer covers: the user channel lost nothing')
    await w.until('open again', () => w.client.state === 'open')
    await publish(t, url, 'product:h', 'tick', { n: 6 })
    await w.until('the next live event', () => w.on('product:h').some((e) => e.payload.n === 6))
    t.same(w.on('product:h').map((e) => e.payload.n), [1, 6], 'no partial replay: the app is told to reload instead')
    t.equal(w.client.lastPositions()['product:h'].offset, 6, 'positions follow the live stream again')
  })
}

test('falls back to SSE when the WebSocket upgrade is refused: same events, same API', async (t) => {
  const { app, url, wsUrl } = await startServer(t)
  const gate = gatedToken(token('c4'))
  // A path that answers the upgrade with 404 stands in for a proxy that blocks WebSocket.
  const w = watch(t, { url, wsUrl: `${wsUrl}-blocked`, token: gate.token, channels: ['product:s'] })
  await w.until('open', () => w.client.state === 'open')
  t.equal(w.client.transport, 'sse')
  t.match(w.opens[0], { transport: 'sse', resumed: false })

  await publish(t, url, 'product:s', 'stock', { n: 1 })
  await notify(t, url, 'c4', 'over sse')
  await w.until('both events', () => w.events.length === 2)
  t.same(Object.keys(w.events[0]).sort(), ['channel', 'offset', 'payload', 'ts', 'type'], 'the event shape of the WebSocket')
  t.match(w.events[0], { type: 'stock', channel: 'product:s', offset: 1, payload: { n: 1 } })
  t.match(w.events[1], { type: 'notification', channel: 'user:c4', offset: 1 })

  await w.client.subscribe('product:t')
  await publish(t, url, 'product:t', 'stock', { n: 10 })
  await publish(t, url, 'product:s', 'stock', { n: 2 })
  await w.until('events of both channels', () => w.on('product:t').length === 1 && w.on('product:s').length === 2)

  gate.hold()
  app.hub.closeAll(1012, 'server restarting')
  await w.until('reconnecting', () => w.client.state === 'reconnecting')
  await publish(t, url, 'product:s', 'stock', { n: 3 })
  await publish(t, url, 'product:t', 'stock', { n: 11 })
  gate.release()
  await w.until('the missed events', () => w.on('product:s').length === 3 && w.on('product:t').length === 2)
  t.equal(w.client.transport, 'sse', 'it stays on SSE: WebSocket never worked here')
  t.same(offsets(w.on('product:s')), [1, 2, 3])
  t.same(offsets(w.on('product:t')), [1, 2])
  t.same(w.recoveries, [])

  await w.client.unsubscribe('product:t')
  await publish(t, url, 'product:t', 'stock', { n: 12 })
  await publish(t, url, 'product:s', 'stock', { n: 4 })
  await w.until('the later event', () => w.on('product:s').length === 4)
  t.equal(w.on('product:t').length, 2, 'nothing after unsubscribe')
})

for (const transport of ['ws', 'sse'] as const) {
  test(`${transport}: refreshToken keeps a connection past its first token's expiry`, async (t) => {
    const { url } = await startServer(t)
    const options = { url, channels: ['product:x'], transports: [transport] }
    const refreshed = watch(t, { ...options, token: token('c5', [], 2) })
    const control = watch(t, { ...options, token: token('c6', [], 2) })
    await refreshed.until('open', () => refreshed.client.state === 'open')
    await control.until('open', () => control.client.state === 'open')

    await refreshed.client.refreshToken(token('c5', [], 3600))
    // Over SSE the client refuses these itself (audit: it reopened as the other user, or
    // dropped a working stream for an expired token), keeping the stream and its token.
    await t.rejects(refreshed.client.refreshToken(token('someone-else')), { code: 'forbidden' }, 'a token for another user is refused')
    await t.rejects(refreshed.client.refreshToken(token('c5', [], -10)), { code: 'forbidden' }, 'an expired one too')
    await t.rejects(refreshed.client.refreshToken('not-a-token'), { code: 'forbidden' }, 'and what is not a token')

    // The control keeps its 2 s token: the gateway ends it at expiry (4001: a WebSocket's close
    // code, an SSE system:disconnect), and a fixed token that expired is never tried again (the
    // gateway would refuse it, and over WebSocket a browser cannot even see that 401: audit,
    // a client on WebSocket alone retried it for ever).
    await control.until('a token_expired error', () => control.errors.some((e) => e.code === 'token_expired'), 8000)
    await control.until('the control to close', () => control.client.state === 'closed', 2000)
    t.notOk(control.states.includes('reconnecting'), `no attempt with the expired token: ${control.states.join(' → ')}`)

    t.equal(refreshed.client.state, 'open')
    t.notOk(refreshed.states.includes('reconnecting'), `the refreshed connection was never cut: ${refreshed.states.join(' → ')}`)
    t.equal(refreshed.client.transport, transport)
    await publish(t, url, 'product:x', 'still', { alive: true })
    await refreshed.until('an event on the refreshed connection', () => refreshed.on('product:x').length === 1)
  })
}

for (const transport of ['ws', 'sse'] as const) {
  test(`${transport}: after an expiry a token function must give a new token: it reconnects with it, and stops on the same one`, async (t) => {
    const { url } = await startServer(t)
    const short = token('c8', [], 2)
    let next = short
    const renewing = watch(t, { url, channels: ['product:y'], transports: [transport], token: () => next })
    const stubborn = watch(t, { url, channels: ['product:y'], transports: [transport], token: () => short })
    let stubbornReason: string | undefined
    stubborn.client.on('state', (s) => { if (s.state === 'closed') stubbornReason = s.reason })
    await renewing.until('open', () => renewing.client.state === 'open')
    await stubborn.until('open', () => stubborn.client.state === 'open')
    next = token('c8', [], 3600)

    await renewing.until('a token_expired error', () => renewing.errors.some((e) => e.code === 'token_expired'), 8000)
    await renewing.until('open again, with the new token', () => renewing.opens.length === 2 && renewing.client.state === 'open')
    await stubborn.until('the same token again to close the client', () => stubborn.client.state === 'closed', 8000)
    t.equal(stubbornReason, 'token expired; no new token')
    t.equal(stubborn.opens.length, 1, 'never connected again with the expired token')
  })
}

test('a refreshToken() still unanswered when the old token expires: the client goes on with the new token', async (t) => {
  const { url } = await startServer(t)
  // The refresh never reaches the gateway (dropped on the way, as on a slow link), so the
  // connection is ended as expired (4001) while the refresh waits for its answer.
  class DroppingRefresh extends WebSocket {
    override send (data: any, ...rest: any[]): void {
      if (String(data).includes('"auth:refresh"')) return
      super.send(data, ...rest)
    }
  }
  const w = watch(t, { url, channels: ['product:z'], transports: ['ws'], token: token('c9', [], 2), WebSocket: DroppingRefresh as unknown as WebSocketConstructor })
  await w.until('open', () => w.client.state === 'open')
  const refreshed = w.client.refreshToken(token('c9', [], 3600))
  await w.until('a token_expired error', () => w.errors.some((e) => e.code === 'token_expired'), 8000)
  await refreshed
  await w.until('open again with the new token', () => w.opens.length === 2 && w.client.state === 'open', 5000)
  t.notOk(w.states.includes('closed'), `never closed: ${w.states.join(' → ')}`)
  await publish(t, url, 'product:z', 'still', { alive: true })
  await w.until('an event on the new connection', () => w.on('product:z').length === 1)
})

test('a gateway that is down is retried with growing delays, never in a tight loop', async (t) => {
  // A port that refuses connections: one that was free a moment ago, with nothing listening.
  const port = await freePort()

  const w = watch(t, { url: `http://127.0.0.1:${port}`, token: token('c7'), backoff: { initialMs: 100, maxMs: 400 } })
  const delays: number[] = []
  w.client.on('state', (s) => { if (s.state === 'reconnecting') delays.push(s.delayMs) })
  await sleep(2000)
  w.client.close()
  t.equal(w.client.state, 'closed')
  t.ok(delays.length >= 3, `it kept trying (${delays.length} attempts)`)
  t.ok(delays.length <= 15, `and backed off: ${delays.length} attempts in 2 s (delays ${delays.join(', ')})`)
  t.ok(delays.filter((d) => d === 0).length <= 1, 'only the first fallback to SSE is immediate')
  t.ok(delays.slice(-2).every((d) => d >= 200), 'delays grow to the ceiling (half to all of it, with jitter)')
  t.same(w.opens, [])
})

/**
 * `ws`, but every incoming frame waits for `hook(frame)` before the client sees it:
 * lets a test act at an exact point of the protocol (here: between greeting and subscribe).
 */
function hookedWebSocket (hook: (frame: any) => Promise<void>): WebSocketConstructor {
  return class HookedWebSocket {
    onopen: ((event: any) => void) | null = null
    onmessage: ((event: any) => void) | null = null
    onclose: ((event: any) => void) | null = null
    onerror: ((event: any) => void) | null = null
    private readonly inner: WebSocket
    constructor (url: string) {
      this.inner = new WebSocket(url)
      let chain = Promise.resolve()
      this.inner.onopen = (e) => this.onopen?.(e)
      this.inner.onclose = (e) => { chain = chain.then(() => this.onclose?.(e)) }
      this.inner.onerror = (e) => this.onerror?.(e)
      this.inner.onmessage = (e) => {
        chain = chain.then(async () => {
          await hook(JSON.parse(String(e.data)))
          this.onmessage?.(e)
        })
      }
    }

    get readyState (): number { return this.inner.readyState }
    send (data: string): void { this.inner.send(data) }
    close (code?: number, reason?: string): void { this.inner.close(code, reason) }
  }
}

test('ws: an event sent live on the user channel while it is being resumed is shown once', async (t) => {
  const { app, url } = await startServer(t)
  let greetings = 0
  const WebSocketImpl = hookedWebSocket(async (frame) => {
    // On the reconnect's greeting, before the client can ask to resume: the gateway sends
    // this one live (the user channel is joined at connect) and the resume replays it.
    if (frame.type === 'system:connected' && ++greetings === 2) await notify(t, url, 'c8', 'during the resume')
  })
  const w = watch(t, { url, token: token('c8'), WebSocket: WebSocketImpl })
  await w.until('open', () => w.client.state === 'open')
  await notify(t, url, 'c8', 'first')
  await w.until('the first notification', () => w.events.length === 1)

  app.hub.closeAll(1012, 'server restarting')
  await w.until('open again', () => w.opens.length === 2)
  await notify(t, url, 'c8', 'after')
  await w.until('the live notification after the resume', () => w.events.some((e) => e.payload.message === 'after'))
  t.same(w.on('user:c8').map((e) => e.payload.message), ['first', 'during the resume', 'after'])
  t.same(offsets(w.on('user:c8')), [1, 2, 3], 'once each, in order')
})

test('ws: events missed while away and one sent live during the resume come once each, in offset order', async (t) => {
  const { app, url } = await startServer(t)
  let greetings = 0
  const WebSocketImpl = hookedWebSocket(async (frame) => {
    // The reconnect's greeting reaches the client only after this live event was sent, so
    // it is on the wire before the missed ones are replayed: the client must reorder.
    if (frame.type === 'system:connected' && ++greetings === 2) await notify(t, url, 'c9', 'during the resume')
  })
  const gate = gatedToken(token('c9'))
  const w = watch(t, { url, token: gate.token, WebSocket: WebSocketImpl })
  await w.until('open', () => w.client.state === 'open')
  await notify(t, url, 'c9', 'first')
  await w.until('the first notification', () => w.events.length === 1)

  gate.hold()
  app.hub.closeAll(1012, 'server restarting')
  await w.until('the drop', () => w.client.state !== 'open')
  await notify(t, url, 'c9', 'missed 1')
  await notify(t, url, 'c9', 'missed 2')
  gate.release()
  await w.until('open again', () => w.opens.length === 2)
  await notify(t, url, 'c9', 'after')
  await w.until('the notification after the resume', () => w.events.some((e) => e.payload.message === 'after'))
  t.same(w.on('user:c9').map((e) => e.payload.message), ['first', 'missed 1', 'missed 2', 'during the resume', 'after'])
  t.same(offsets(w.on('user:c9')), [1, 2, 3, 4, 5], 'once each, in order')
  t.same(w.recoveries, [])
})

for (const transport of ['ws', 'sse'] as const) {
  test(`${transport}: a channel it may not read is refused alone: the others go live, and it is dropped`, async (t) => {
    // Audit: over WebSocket the refused frame took the allowed channels with it while 'open'
    // listed them all; over SSE the stream was refused for ever, every channel dark.
    const { url } = await startServer(t)
    const w = watch(t, { url, token: token('f1'), channels: ['room:fx', 'admin'], transports: [transport], backoff: { initialMs: 50, maxMs: 200 } })
    await w.until('open', () => w.client.state === 'open')
    t.ok(w.errors.some((e) => e.code === 'forbidden'), 'the refusal is told')
    t.notOk((w.opens.at(-1) as unknown as { channels: string[] }).channels.includes('admin'), '\'open\' lists only what is live')
    await publish(t, url, 'room:fx', 'stock', { n: 1 })
    await w.until('the allowed channel\'s event', () => w.on('room:fx').length === 1)

    await t.rejects(w.client.subscribe(['room:fy', 'admin']), { code: 'forbidden' }, 'a subscribe naming it is rejected')
    await w.until('open again', () => w.client.state === 'open')
    await publish(t, url, 'room:fy', 'stock', { n: 1 })
    await publish(t, url, 'room:fx', 'stock', { n: 2 })
    await w.until('the other channel of that subscribe is live', () => w.on('room:fy').length === 1 && w.on('room:fx').length === 2)
    t.same(offsets(w.on('room:fx')), [1, 2], 'and the first one lost nothing')
  })
}

test('sse: a token the gateway refuses (401) is not tried again: the client closes', async (t) => {
  // Audit: an expired or revoked fixed token was retried for ever.
  const { url } = await startServer(t)
  const w = watch(t, { url, token: token('f2', [], -10), channels: ['room:fz'], transports: ['sse'], backoff: { initialMs: 50, maxMs: 200 } })
  await w.until('closed', () => w.client.state === 'closed', 5000)
  t.ok(w.errors.some((e) => e.code === 'unauthorized'), 'told why')
  t.same(w.opens, [])
})

test('ws: a WebSocket the gateway refused with 1013 (a connection limit) is retried, not swapped for SSE for good', async (t) => {
  // Audit: the first WebSocket closed with 1013 sent the client to SSE, and it stayed there.
  const { url } = await startServer(t, { MAX_CONNECTIONS_PER_USER: 1 })
  const first = watch(t, { url, token: token('f3'), transports: ['ws'] })
  await first.until('open', () => first.client.state === 'open')
  const second = watch(t, { url, token: token('f3'), backoff: { initialMs: 50, maxMs: 200 } })
  await sleep(500)
  t.equal(second.client.state, 'reconnecting', 'refused while the first holds the only slot')
  first.client.close()
  await second.until('open once the slot is free', () => second.client.state === 'open')
  t.equal(second.client.transport, 'ws', 'over WebSocket')
})

test('ws: a subscribe of 120 channels with two it may not read: the 118 go live in one more frame, the connection stays', async (t) => {
  // Review: asking channel by channel after a refusal ran into the inbound rate limit (1008).
  const { url } = await startServer(t)
  const w = watch(t, { url, token: token('f4'), transports: ['ws'] })
  await w.until('open', () => w.client.state === 'open')
  const rooms = Array.from({ length: 118 }, (_, i) => `room:many-${i}`)
  await t.rejects(w.client.subscribe([...rooms.slice(0, 60), 'admin', ...rooms.slice(60), 'orders']), { code: 'forbidden' })
  await publish(t, url, 'room:many-117', 'stock', { n: 1 })
  await publish(t, url, 'room:many-0', 'stock', { n: 1 })
  await w.until('events of the allowed channels', () => w.on('room:many-117').length === 1 && w.on('room:many-0').length === 1)
  t.equal(w.client.state, 'open', 'the connection was never cut')
  t.notOk(w.states.includes('reconnecting'))
})

test('ws: a subscribe the gateway answers rate_limited ("try again in a moment") is asked again until taken, not left dark', async (t) => {
  // A refused resume or rewind left its channel subscribed in the app and silent on the
  // connection until the next reconnect (session 27).
  const { url, wsUrl } = await startServer(t, { WS_SUBSCRIBES_PER_SECOND: 1, WS_SUBSCRIBES_BURST: 4, MAX_CHANNELS_PER_CONNECTION: 4 })
  const channels = ['product:rl-a', 'product:rl-b', 'product:rl-c']
  for (const channel of channels) await publish(t, url, channel, 'stock', { n: 1 })
  // Three of the user's burst of four spent on another connection: the greeting's two
  // channels are refused at first (one back a second).
  await spendSubscribes(t, wsUrl, 'rl1', 3)
  const w = watch(t, { url, token: token('rl1'), channels: channels.slice(0, 2), rewind: 1, transports: ['ws'] })
  await w.until('the refusal', () => w.errors.some((e) => e.code === 'rate_limited'))
  await w.client.subscribe('product:rl-c', { rewind: 1 })
  await w.until('every channel\'s rewound state', () => channels.every((c) => w.on(c).length === 1), 10_000)
  t.same(channels.map((c) => w.on(c).map((e) => e.payload.n)), [[1], [1], [1]], 'asked again, each rewind arrived')
  for (const channel of channels) await publish(t, url, channel, 'stock', { n: 2 })
  await w.until('live events on every channel', () => channels.every((c) => w.on(c).length === 2))
  t.same(offsets(w.on('product:rl-a')), [1, 2], 'and every channel is live, with no gap')
  t.notOk(w.states.includes('reconnecting'), 'on the same connection')
})

test('ws: a subscribe that failed as internal (the gateway\'s Redis down) is asked again until taken, not left dark', async (t) => {
  // Audit (client in Chromium): the channel stayed wanted but unsubscribed, and the app's
  // own retry resolved at once without a frame: dark until the next reconnect.
  const redis = await OwnRedis.start(t)
  const { url } = await startServer(t, { REDIS_URL: redis.url })
  const w = watch(t, { url, token: token('in1'), transports: ['ws'], backoff: { initialMs: 100, maxMs: 400 } })
  await w.until('open', () => w.client.state === 'open')
  await redis.kill()
  const subscribing = w.client.subscribe('room:in-a')
  await w.until('the failure', () => w.errors.some((e) => e.code === 'internal'))
  await redis.restart()
  await subscribing
  t.pass('the subscribe settled once Redis was back')
  await eventually('a publish taken', async () => (await post(`${url}/realtime/publish`, serviceToken(), { channel: 'room:in-a', type: 'stock', payload: { n: 1 } })).status === 202, 10_000)
  await w.until('its event', () => w.on('room:in-a').length === 1)
})

test('ws: a subscribe refused as rate_limited, retried meanwhile, does not hold the connection from opening', async (t) => {
  // Review: three channels refused, retried (then for ever: a burst below them), kept 'open'
  // from firing. Three of the user's burst of four are spent on another connection first:
  // the three pass only once two seconds have given them back.
  const { url, wsUrl } = await startServer(t, { WS_SUBSCRIBES_PER_SECOND: 1, WS_SUBSCRIBES_BURST: 4, MAX_CHANNELS_PER_CONNECTION: 4 })
  await spendSubscribes(t, wsUrl, 'rl2', 3)
  const w = watch(t, { url, token: token('rl2'), channels: ['product:rl2-a', 'product:rl2-b', 'product:rl2-c'], transports: ['ws'] })
  await w.until('open', () => w.client.state === 'open')
  t.ok(w.errors.some((e) => e.code === 'rate_limited'), 'after its refusal')
  await publish(t, url, 'user:rl2', 'order:placed', { n: 1 })
  await w.until('its own channel live', () => w.on('user:rl2').length === 1)
})

/** Spends `count` of the user's subscribe budget on a connection of its own (channels no one else names). */
async function spendSubscribes (t: Test, wsUrl: string, sub: string, count: number): Promise<void> {
  const spender = await WsClient.connect(t, wsUrl, token(sub))
  const channels = Array.from({ length: count }, (_, i) => `room:${sub}-spent-${i}`)
  t.equal((await spender.request({ type: 'subscribe', id: 'spend', payload: { channels } })).type, 'subscribed', `${count} of ${sub}'s budget spent`)
}

for (const transport of ['ws', 'sse'] as const) {
  test(`${transport}: a malformed channel name is refused alone, by the client: the other channels go live`, async (t) => {
    // Carried from an audit: over SSE one bad name made every reconnect a 400, every channel dark, for ever.
    const { url } = await startServer(t)
    const w = watch(t, { url, token: token('f5'), channels: ['room:n1', 'not a name'], transports: [transport], backoff: { initialMs: 50, maxMs: 200 } })
    await w.until('open', () => w.client.state === 'open')
    t.match(w.errors[0], { code: 'bad_request', channels: ['not a name'] }, 'the bad name at connect is told')
    await t.rejects(w.client.subscribe(['room:n2', 'x'.repeat(201), 'a/b']), { code: 'bad_request', channels: ['x'.repeat(201), 'a/b'] }, 'rejected at once')
    // The good name of that subscribe goes on by itself (its answer is not awaited): publish until it is live.
    for (let n = 1; w.on('room:n2').length === 0; n++) {
      await publish(t, url, 'room:n2', 'stock', { n })
      await sleep(50)
      if (n > 100) throw new Error('room:n2 never became live')
    }
    await publish(t, url, 'room:n1', 'stock', { n: 1 })
    await w.until('the first good channel live too', () => w.on('room:n1').length === 1)
    t.equal(w.client.state, 'open')
    t.notOk(w.states.includes('reconnecting'), 'no refused reconnects')
  })
}

test('sse: a stream the gateway refuses as malformed (400) is not asked for again the same way', async (t) => {
  const { url } = await startServer(t, { MAX_CHANNELS_PER_CONNECTION: 3 })
  const w = watch(t, { url, token: token('f6'), channels: ['room:m1'], transports: ['sse'], backoff: { initialMs: 50, maxMs: 200 } })
  await w.until('open', () => w.client.state === 'open')
  // user:f6 and room:m1 held; two more are one over the limit: that subscribe is refused, the stream reopens as it was.
  await t.rejects(w.client.subscribe(['room:m2', 'room:m3']), { code: 'bad_request', status: 400, channels: ['room:m2', 'room:m3'] })
  await w.until('open again', () => w.client.state === 'open')
  await publish(t, url, 'room:m1', 'stock', { n: 1 })
  await w.until('the first channel still live', () => w.on('room:m1').length === 1)
  t.equal(w.opens.length, 2, 'one reopen, refused once, then the stream as it was')

  // Configured beyond the limit from the start: nothing to drop, so the client closes instead of retrying for ever.
  const over = watch(t, { url, token: token('f7'), channels: ['room:o1', 'room:o2', 'room:o3'], transports: ['sse'], backoff: { initialMs: 50, maxMs: 200 } })
  await over.until('closed', () => over.client.state === 'closed')
  t.match(over.errors, [{ code: 'bad_request', status: 400 }])
})

test('sse: a 400 that is not the gateway\'s (a proxy\'s "header too large") is retried with backoff, not taken as final', async (t) => {
  // Review: any 400 closed the client for good, until the page was reloaded.
  const { createServer } = await import('node:http')
  let requests = 0
  const proxy = createServer((_req, res) => {
    requests++
    res.writeHead(400, { 'content-type': 'text/html' }).end('<html><body>400 Request Header Or Cookie Too Large</body></html>')
  })
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  t.teardown(() => proxy.close())
  const { port } = proxy.address() as { port: number }
  const w = watch(t, { url: `http://127.0.0.1:${port}`, token: token('f8'), channels: ['room:p1'], transports: ['sse'], backoff: { initialMs: 20, maxMs: 40 } })
  await w.until('three refused attempts', () => requests >= 3)
  t.equal(w.client.state, 'reconnecting', 'still trying')
  t.notOk(w.states.includes('closed'))
})
