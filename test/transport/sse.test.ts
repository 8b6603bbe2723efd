import { EventSource } from 'eventsource'
import type { IncomingMessage } from 'node:http'
import t, { type Test } from 'tap'
import { BrokerUnavailableError } from '../../lib/broker/broker.js'
import { MemoryBroker } from '../../lib/broker/memory-broker.js'
import { CloseCode } from '../../lib/core/errors.js'
import { publishAll } from '../../lib/ingress/publisher.js'
import { decodeCursor } from '../../lib/transport/sse-cursor.js'
import { post, rawConnection, serviceToken, SseClient, type SseEvent, startServer, token } from '../support/helper.js'
import { eventually } from '../support/redis-fixture.js'

const publish = (url: string, channel: string, payload: Record<string, unknown> = {}, type = 'test:event') =>
  post(`${url}/realtime/publish`, serviceToken(), { channel, type, payload })

/** The stream URL; `bearer` null sends no token. */
const sseUrl = (url: string, channels: string, bearer: string | null = token('42'), extra = '') =>
  `${url}/sse?channels=${encodeURIComponent(channels)}${bearer === null ? '' : `&token=${encodeURIComponent(bearer)}`}${extra}`

const isData = (e: SseEvent) => !e.event.startsWith('system:')
const summary = (events: SseEvent[]) => events.filter(isData).map((e) => `${e.data.channel}#${e.data.offset}`)

t.test('headers, then system:connected with the user and its channels', async (t) => {
  const { url } = await startServer(t)
  const sse = await SseClient.open(t, sseUrl(url, 'product:7,inventory'))
  t.equal(sse.status, 200)
  t.match(sse.headers.get('content-type'), /^text\/event-stream/)
  t.equal(sse.headers.get('cache-control'), 'no-cache')
  t.equal(sse.headers.get('x-accel-buffering'), 'no')
  const [connected] = await sse.waitFor(1)
  t.equal(connected.event, 'system:connected', 'the first event')
  t.same(Object.keys(connected.data).sort(), ['channels', 'connectionId', 'userId'])
  t.match(connected.data, { userId: '42', channels: ['user:42', 'product:7', 'inventory'], connectionId: String })

  const viaHeader = await SseClient.open(t, `${url}/sse?channels=user:43`, { authorization: `Bearer ${token('43')}` })
  const [greeting] = await viaHeader.waitFor(1)
  t.same(greeting.data.channels, ['user:43'], 'token in the header; the own channel listed once')
})

t.test('a stream\'s connection carries nothing after it: Connection: close, a request sent after it is not read, its end closes the connection', async (t) => {
  // Session 32: the stream's socket is taken from the HTTP server once it opens (its parser
  // freed), so no request after it could be answered there; a keep-alive pool must not try.
  const { url } = await startServer(t)
  const { socket, received } = await rawConnection(t, url)
  socket.write(`GET /sse?channels=room:pipe&token=${token('p1')} HTTP/1.1\r\nHost: x\r\n\r\n`)
  await eventually('system:connected', () => received().includes('system:connected'))
  t.match(received(), /^HTTP\/1\.1 200 OK\r\n/)
  t.match(received(), /\r\nconnection: close\r\n/i, 'Connection: close')
  await new Promise((resolve) => setTimeout(resolve, 50))
  socket.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n')
  t.equal((await publish(url, 'room:pipe', { n: 1 })).status, 202)
  await eventually('the event', () => received().includes('"n":1'))
  const closed = new Promise((resolve) => socket.once('close', resolve))
  t.equal((await post(`${url}/realtime/disconnect`, serviceToken(), { userId: 'p1' })).status, 202)
  await closed
  t.equal((received().match(/HTTP\/1\.1 /g) ?? []).length, 1, 'the request sent after the stream was never answered')
  t.match(received(), /event: system:disconnect\n/, 'told why')
  t.match(received(), /0\r\n\r\n$/, 'the last chunk, then the server closed the connection')
})

t.test('a stream asked for behind another on one connection (pipelined) is refused; the client gone, no stream is left counted', async (t) => {
  // Review (session 32): on Node 20 the queued second stream never closed when the client
  // left, and stayed counted against the user's and the instance's limits.
  const { app, url } = await startServer(t)
  const { socket, received } = await rawConnection(t, url)
  const request = `GET /sse?channels=room:two&token=${token('p2')} HTTP/1.1\r\nHost: x\r\n\r\n`
  socket.write(request + request)
  await eventually('the first stream', () => received().includes('system:connected'))
  const streams = () => [...app.hub.connections()].filter((c) => c.transport === 'sse').length
  t.equal(streams(), 1, 'the first stream is open, the second never entered')
  socket.destroy()
  await eventually('no stream left', () => streams() === 0)
  t.equal(streams(), 0, 'the client gone, no stream is left')
})

t.test('events: id, event = type, data {channel, offset, payload, ts}, only the stream channels', async (t) => {
  const { url } = await startServer(t)
  const sse = await SseClient.open(t, sseUrl(url, 'product:7,inventory'))
  await sse.waitFor(1)
  const res = await post(`${url}/realtime/broadcast/inventory`, serviceToken(), { productId: 7, stock: 50, previousStock: 60 })
  t.equal(res.status, 202)
  await publish(url, 'product:8', { other: true })
  await post(`${url}/realtime/notify`, serviceToken(), { userId: '43', payload: { not: 'mine' } })
  await post(`${url}/realtime/notify`, serviceToken(), { userId: '42', payload: { mine: true } })
  const events = (await sse.waitFor(3, isData))
  t.same(summary(events), ['product:7#1', 'inventory#1', 'user:42#1'])
  const [product] = events
  t.equal(product.event, 'inventory:updated')
  t.type(product.id, 'string')
  t.ok((product.id ?? '').length > 0, 'an id to resume from')
  t.same(Object.keys(product.data).sort(), ['channel', 'offset', 'payload', 'ts'])
  t.match(product.data, { channel: 'product:7', offset: 1, payload: { productId: 7, stock: 50 } })
  t.ok(!Number.isNaN(Date.parse(product.data.ts)))
  t.match(events[2], { event: 'notification', data: { payload: { mine: true } } })
  t.not(events[0].id, events[1].id, 'each event moves the cursor')
})

t.test('refusals are plain HTTP: 401, 403, 400', async (t) => {
  const { url } = await startServer(t, { MAX_CHANNELS_PER_CONNECTION: 3 })
  const cases: Array<[string, string, number]> = [
    ['no token', sseUrl(url, 'product:7', null), 401],
    ['a bad token', sseUrl(url, 'product:7', 'not-a-jwt'), 401],
    ['an expired token', sseUrl(url, 'product:7', token('42', [], -10)), 401],
    ['another user', sseUrl(url, 'user:43'), 403],
    ['admin', sseUrl(url, 'product:7,admin'), 403],
    ['orders', sseUrl(url, 'orders'), 403],
    ['an unknown namespace', sseUrl(url, 'secret:1'), 403],
    ['a space', sseUrl(url, 'room:a b'), 400],
    ['a #', sseUrl(url, 'product:7,room:#1'), 400],
    ['201 characters', sseUrl(url, 'r'.repeat(201)), 400],
    ['more than MAX_CHANNELS_PER_CONNECTION', sseUrl(url, 'room:1,room:2,room:3'), 400],
    ['an empty name between commas', sseUrl(url, 'product:7,,room:1'), 400],
    ['a trailing comma', sseUrl(url, 'product:7,'), 400],
    ['only a comma', sseUrl(url, ','), 400]
  ]
  for (const [what, target, status] of cases) {
    const sse = await SseClient.open(t, target)
    t.equal(sse.status, status, `${what}: ${status}`)
    t.match(JSON.parse(sse.body), { statusCode: status, message: String }, `${what}: a JSON reason`)
  }
  const empty = await SseClient.open(t, sseUrl(url, 'product:7,,room:1'))
  t.match(JSON.parse(empty.body).message, /^channels: name 2 of 3 is empty$/, 'the empty name is pointed at')
  for (const list of ['', ' ', 'product:7, room:1']) {
    const sse = await SseClient.open(t, sseUrl(url, list))
    t.equal(sse.status, 200, `channels=${JSON.stringify(list)}: a stream (empty means only the user's own; spaces around names are not part of them)`)
    sse.close()
  }
})

/** Opens a stream, reads `count` data events, and closes it; returns the last id seen. */
async function readAndLeave (t: Test, target: string, count: number): Promise<string> {
  const sse = await SseClient.open(t, target)
  const events = await sse.waitFor(count === 0 ? 1 : count, count === 0 ? () => true : isData)
  sse.close()
  const id = events[events.length - 1].id
  if (id === undefined) throw new Error('no id')
  return id
}

t.test('resume with Last-Event-ID or ?lastEventId=: exactly the missed events, in order', async (t) => {
  const { url } = await startServer(t)
  for (const how of ['header', 'query'] as const) {
    const channel = `product:${how}`
    const target = sseUrl(url, channel)
    await publish(url, channel, { n: 1 })
    const reader = await SseClient.open(t, target)
    await reader.waitFor(1)
    await publish(url, channel, { n: 2 })
    const seen = await reader.waitFor(1, isData)
    reader.close()
    const lastId = seen[0].id ?? ''
    // Missed while away: two on the product channel, one on the user's own channel.
    await publish(url, channel, { n: 3 })
    await post(`${url}/realtime/notify`, serviceToken(), { userId: '42', payload: { n: 'u' } })
    await publish(url, channel, { n: 4 })

    const resumed = how === 'header'
      ? await SseClient.open(t, target, { 'last-event-id': lastId })
      : await SseClient.open(t, target + `&lastEventId=${encodeURIComponent(lastId)}`)
    await resumed.waitFor(3, isData)
    await publish(url, channel, { n: 5 })
    const events = await resumed.waitFor(4, isData)
    t.equal(resumed.events[0].event, 'system:connected')
    t.notOk(resumed.events.some((e) => e.event === 'system:recovery'), `${how}: no recovery warning`)
    t.same(summary(events).filter((s) => s.startsWith(channel)), [`${channel}#3`, `${channel}#4`, `${channel}#5`], `${how}: missed then live, in order`)
    t.same(summary(events).filter((s) => s.startsWith('user:42')), ['user:42#' + String(how === 'header' ? 1 : 2)], `${how}: the missed event of the other channel too`)
    t.equal(events.length, 4, `${how}: nothing else, nothing twice`)
    resumed.close()
  }

  // A client that saw only the greeting resumes from the greeting's id.
  const greetingId = await readAndLeave(t, sseUrl(url, 'room:g', token('50')), 0)
  await publish(url, 'room:g', { n: 1 })
  await publish(url, 'room:g', { n: 2 })
  const fromGreeting = await SseClient.open(t, sseUrl(url, 'room:g', token('50')), { 'last-event-id': greetingId })
  t.same(summary(await fromGreeting.waitFor(2, isData)), ['room:g#1', 'room:g#2'])
})

t.test('a garbage or too-old cursor: system:recovery {recovered:false} before any event', async (t) => {
  const { url } = await startServer(t, { HISTORY_SIZE: 2 })
  const garbage = await SseClient.open(t, sseUrl(url, 'product:1'), { 'last-event-id': 'garbage' })
  await garbage.waitFor(2)
  t.same(garbage.events.map((e) => e.event), ['system:connected', 'system:recovery'])
  t.same(garbage.events[1].data, { recovered: false })
  await publish(url, 'product:1')
  t.same(summary(await garbage.waitFor(1, isData)), ['product:1#1'], 'then live events')

  const lastId = await readAndLeave(t, sseUrl(url, 'product:2'), 0)
  for (let i = 0; i < 5; i++) await publish(url, 'product:2', { i })
  const old = await SseClient.open(t, sseUrl(url, 'product:2', token('42'), `&lastEventId=${encodeURIComponent(lastId)}`))
  await old.waitFor(2)
  t.same(old.events.map((e) => e.event), ['system:connected', 'system:recovery'], 'history no longer holds what it missed')
  await publish(url, 'product:2', { i: 5 })
  t.same(summary(await old.waitFor(1, isData)), ['product:2#6'], 'no partial replay, then live events')
})

t.test('rewind is ignored on a resume: a channel the cursor does not name starts live, as does a stream whose cursor is not ours', async (t) => {
  const { url } = await startServer(t)
  for (let i = 1; i <= 3; i++) await publish(url, 'room:named', { i })
  for (let i = 1; i <= 3; i++) await publish(url, 'room:unnamed', { i })
  const lastId = await readAndLeave(t, sseUrl(url, 'room:named', token('77')), 0)
  await publish(url, 'room:named', { i: 4 })
  await publish(url, 'room:unnamed', { i: 4 })
  // The cursor names user:77 and room:named only; the stream adds room:unnamed (as the
  // browser client reopens its stream to subscribe to one more channel).
  const widened = await SseClient.open(t, sseUrl(url, 'room:named,room:unnamed', token('77'), '&rewind=2'), { 'last-event-id': lastId })
  await widened.waitFor(2)
  await publish(url, 'room:unnamed', { i: 5 })
  const events = await widened.waitFor(3)
  t.equal(events[0].event, 'system:connected')
  t.notOk(events.some((e) => e.event === 'system:recovery'), 'nothing was missed: the new channel was not held before')
  t.same(summary(events), ['room:named#4', 'room:unnamed#5'], 'the named channel resumes from the cursor; the new one starts live: rewind ignored (docs/protocol.md)')

  const none = await SseClient.open(t, sseUrl(url, 'room:named', token('78'), '&rewind=1'), { 'last-event-id': 'v1;room:elsewhere,e,5' })
  await none.waitFor(1)
  await publish(url, 'room:named', { i: 5 })
  t.same(summary(await none.waitFor(2)), ['room:named#5'], 'a cursor of other channels only: live, no rewind')
  const garbage = await SseClient.open(t, sseUrl(url, 'room:named', token('79'), '&rewind=1'), { 'last-event-id': 'garbage' })
  await garbage.waitFor(2)
  await publish(url, 'room:named', { i: 6 })
  const told = await garbage.waitFor(3)
  t.same(told.map((e) => e.event), ['system:connected', 'system:recovery', 'test:event'], 'a cursor that is not ours: recovery false first, then live')
  t.same(summary(told), ['room:named#6'])
  const fresh = await SseClient.open(t, sseUrl(url, 'room:named', token('80'), '&rewind=2'))
  t.same(summary(await fresh.waitFor(3)), ['room:named#5', 'room:named#6'], 'with no Last-Event-ID, the rewind')
})

t.test('a stream at the limits (128 channels of 200 characters) opens, and resumes with its Last-Event-ID', async (t) => {
  const { url } = await startServer(t)
  const channels = Array.from({ length: 127 }, (_, i) => `room:${String(i).padStart(3, '0')}${'x'.repeat(192)}`)
  t.equal(channels[0].length, 200)
  const target = sseUrl(url, channels.join(','), token('wide'))
  const lastId = await readAndLeave(t, target, 0)
  t.ok(target.length + lastId.length > 50_000, `URL and cursor: ${target.length + lastId.length} characters (Node's default limit was 16 KiB)`)
  await publish(url, channels[126], { n: 1 })
  const resumed = await SseClient.open(t, target, { 'last-event-id': lastId })
  t.equal(resumed.status, 200, 'not 431')
  t.same(summary(await resumed.waitFor(1, isData)), [`${channels[126]}#1`], 'what it missed')
  t.notOk(resumed.events.some((e) => e.event === 'system:recovery'))
  const viaQuery = await SseClient.open(t, `${target}&lastEventId=${encodeURIComponent(lastId)}`)
  t.equal(viaQuery.status, 200, '?lastEventId= too')
})

t.test('comment heartbeats keep an idle stream alive', async (t) => {
  const { url } = await startServer(t, { SSE_HEARTBEAT_MS: 100 })
  const sse = await SseClient.open(t, sseUrl(url, 'product:1'))
  await sse.waitFor(1)
  const deadline = Date.now() + 5000
  while (sse.comments < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
  t.ok(sse.comments >= 2, `comment heartbeats (${sse.comments})`)
  t.equal(sse.events.length, 1, 'heartbeats are not events')
  t.notOk(sse.ended)
})

t.test('anonymous streams, when allowed, read public channels only', async (t) => {
  const { url } = await startServer(t, { ALLOW_ANONYMOUS: true })
  const anon = await SseClient.open(t, sseUrl(url, 'product:1', null))
  t.equal(anon.status, 200)
  t.match((await anon.waitFor(1))[0].data, { userId: null, channels: ['product:1'] })
  await publish(url, 'product:1', { open: true })
  t.match((await anon.waitFor(1, isData))[0].data, { payload: { open: true } })
  t.equal((await SseClient.open(t, sseUrl(url, 'user:1', null))).status, 403)
  t.equal((await SseClient.open(t, sseUrl(url, 'product:1', 'not-a-jwt'))).status, 401, 'a bad token is still refused')
})

t.test('the real EventSource reconnects by itself with Last-Event-ID and gets what it missed', async (t) => {
  const { url, app } = await startServer(t)
  const lastEventIds: Array<string | null> = []
  const es = new EventSource(sseUrl(url, 'product:7'), {
    fetch: async (input, init) => {
      lastEventIds.push(new Headers(init?.headers).get('last-event-id'))
      return await fetch(input, init)
    }
  })
  t.teardown(() => es.close())
  const received: Array<{ offset: number, id: string }> = []
  let connects = 0
  const waiters: Array<() => void> = []
  const wake = () => { for (const w of waiters.splice(0)) w() }
  es.addEventListener('system:connected', () => { connects++; wake() })
  es.addEventListener('price:changed', (e) => { received.push({ offset: JSON.parse(e.data).offset, id: e.lastEventId }); wake() })
  const until = async (ok: () => boolean, what: string, timeoutMs = 10_000) => {
    const deadline = Date.now() + timeoutMs
    while (!ok()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
      await new Promise<void>((resolve) => { waiters.push(resolve); setTimeout(resolve, 100) })
    }
  }

  await until(() => connects === 1, 'the first connection')
  await publish(url, 'product:7', {}, 'price:changed')
  await publish(url, 'product:7', {}, 'price:changed')
  await until(() => received.length === 2, 'two live events')

  // The server ends the stream (as on a restart); events go on meanwhile.
  app.hub.closeAll(1012, 'test')
  await publish(url, 'product:7', {}, 'price:changed')
  await publish(url, 'product:7', {}, 'price:changed')
  await until(() => connects === 2, 'the automatic reconnect')
  await publish(url, 'product:7', {}, 'price:changed')
  await until(() => received.length === 5, 'missed and live events')
  t.same(received.map((r) => r.offset), [1, 2, 3, 4, 5], 'every event once, in order')
  t.same(lastEventIds, [null, received[1].id], 'the reconnect carried the last id it saw')
})

t.test('every id holds every channel\'s position, the event\'s own last, through a burst to several streams', async (t) => {
  const { url } = await startServer(t)
  const streams = await Promise.all([1, 2, 3].map(async () => await SseClient.open(t, sseUrl(url, 'product:7,inventory'))))
  await Promise.all(streams.map(async (s) => await s.waitFor(1)))
  const sends: Array<Promise<unknown>> = []
  for (let i = 0; i < 20; i++) sends.push(publish(url, i % 3 === 0 ? 'inventory' : 'product:7', { i }))
  await Promise.all(sends)
  await post(`${url}/realtime/notify`, serviceToken(), { userId: '42', payload: { mine: true } })
  for (const sse of streams) {
    const events = await sse.waitFor(21, isData)
    const seen = new Map<string, number>()
    for (const e of events) {
      seen.set(e.data.channel, e.data.offset)
      const cursor = decodeCursor(e.id ?? '')
      t.ok(cursor !== null, 'a cursor of ours')
      const positions = [...(cursor ?? new Map()).entries()]
      t.equal(positions.at(-1)?.[0], e.data.channel, 'the event\'s channel last')
      t.same(Object.fromEntries(positions.map(([c, p]) => [c, p.offset])),
        { 'user:42': seen.get('user:42') ?? 0, 'product:7': seen.get('product:7') ?? 0, inventory: seen.get('inventory') ?? 0 },
        'every channel where the stream stands')
    }
    t.same(events.filter((e) => e.data.channel === 'product:7').map((e) => e.data.offset), Array.from({ length: 13 }, (_, i) => i + 1), 'in order, none lost')
  }
})

t.test('an HTTP/1.0 client (no chunked encoding) gets the same events', async (t) => {
  const { url } = await startServer(t)
  const { socket, received } = await rawConnection(t, url)
  socket.write(`GET /sse?channels=product:7&token=${encodeURIComponent(token('42'))} HTTP/1.0\r\n\r\n`)
  const until = async (done: () => boolean) => { while (!done()) await new Promise((resolve) => setTimeout(resolve, 10)) }
  await until(() => received().includes('event: system:connected'))
  await publish(url, 'product:7', { n: 1 })
  await publish(url, 'product:7', { n: 2 })
  await until(() => received().split('event: test:event').length === 3)
  t.notMatch(received(), /transfer-encoding: chunked/i, 'not chunked')
  const ids = [...received().matchAll(/^id: (.*)$/gm)].map((m) => m[1]).slice(1)
  t.same(ids.map((id) => Object.fromEntries([...(decodeCursor(id) ?? new Map()).entries()].map(([c, p]) => [c, p.offset]))),
    [{ 'user:42': 0, 'product:7': 1 }, { 'user:42': 0, 'product:7': 2 }])
  t.match(received(), /event: test:event\ndata: \{"channel":"product:7","offset":2,"payload":\{"n":2\}/)
})

t.test('a burst larger than what a stream holds corked arrives whole and in order', async (t) => {
  const { app, url } = await startServer(t)
  const sse = await SseClient.open(t, sseUrl(url, 'product:7'))
  await sse.waitFor(1)
  // 40 events of 4 KB in one batch publish: more than the 64 KB a socket is left corked with.
  const text = 'x'.repeat(4096)
  await publishAll(app.hub, Array.from({ length: 40 }, (_, i) => ({ channel: 'product:7', type: 'test:event', payload: { i, text } })))
  const events = await sse.waitFor(40, isData)
  t.same(events.map((e) => e.data.payload.i), Array.from({ length: 40 }, (_, i) => i))
  t.ok(events.every((e) => e.data.payload.text === text), 'every byte')
})

t.test('a disconnect in the same burst as events comes after them, and ends the stream', async (t) => {
  const { app, url } = await startServer(t)
  const sse = await SseClient.open(t, sseUrl(url, 'product:7'))
  await sse.waitFor(1)
  // The events of a burst wait to leave as one write at its end; the disconnect, written
  // before that, must not overtake them.
  app.hub.writeBatch.inBurst(() => {
    void app.hub.broker.publishBatch(Array.from({ length: 5 }, (_, i) => ({ channel: 'product:7', type: 'test:event', payload: { i } })))
    app.hub.closeWhere((identity) => identity.userId === '42', CloseCode.DISCONNECTED, 'bye')
  })
  const events = await sse.waitFor(7)
  t.same(events.slice(1).map((e) => e.event), [...Array.from({ length: 5 }, () => 'test:event'), 'system:disconnect'])
  t.same(events.slice(1, 6).map((e) => e.data.payload.i), [0, 1, 2, 3, 4], 'in order')
  t.match(events[6].data, { code: CloseCode.DISCONNECTED, reason: 'bye' })
  const deadline = Date.now() + 5000
  while (!sse.ended && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  t.ok(sse.ended, 'the stream ended')
})

t.test('an open stream\'s request keeps neither its token nor its headers', async (t) => {
  const { app, url } = await startServer(t)
  const bearer = token('42')
  const viaQuery = await SseClient.open(t, sseUrl(url, 'product:7', bearer))
  const viaHeader = await SseClient.open(t, `${url}/sse?channels=product:7`, { authorization: `Bearer ${bearer}`, cookie: 'session=secret' })
  await Promise.all([viaQuery.waitFor(1), viaHeader.waitFor(1)])
  const requests = [...app.hub.connections()].map((c) => (c as unknown as { res: { req: IncomingMessage } }).res.req)
  t.equal(requests.length, 2)
  for (const req of requests) {
    t.equal(req.url, '/sse', 'the path only')
    t.notOk(req.rawHeaders.some((h) => h.includes(bearer) || h.includes('secret')), 'no token or cookie in the raw headers')
    t.same(req.headers, {}, 'no parsed headers')
  }
  // The stream goes on as before.
  await publish(url, 'product:7', { n: 1 })
  t.match((await viaHeader.waitFor(2))[1], { event: 'test:event', data: { payload: { n: 1 } } })
})

t.test('while the broker is unreachable, a stream is told to come back soon, and the real EventSource does by itself', async (t) => {
  // A 503 made EventSource give up for good (any status but 200 fails it): a legacy
  // browser's page stayed dead after a Redis blip (audit, session 25).
  const state = { down: true }
  const { url } = await startServer(t, {}, {
    createBroker: (deliver, reset) => {
      const broker = new MemoryBroker({ deliver, reset, historySize: 10, historyTtlSeconds: 60 })
      const subscribe = broker.subscribe.bind(broker)
      broker.subscribe = async (channel) => {
        if (state.down) throw new BrokerUnavailableError('redis is not connected (test)')
        await subscribe(channel)
      }
      return broker
    }
  })
  const refused = await fetch(sseUrl(url, 'product:7'))
  t.equal(refused.status, 200, 'a stream, not a 503')
  t.match(refused.headers.get('content-type'), /^text\/event-stream/)
  const body = await refused.text()
  const retry = Number(/^retry: (\d+)$/m.exec(body)?.[1])
  t.ok(retry >= 1000 && retry < 3000, `retry: within 1–3 s (${retry})`)
  t.match(body, /^event: system:unavailable\ndata: \{"status":503,"reason":"the event broker is unavailable","retryMs":\d+\}$/m)
  t.notMatch(body, /system:connected/, 'it never opened')
  const metrics = await (await fetch(`${url}/metrics`)).text()
  t.match(metrics, /gateway_connections_refused_total\{transport="sse",reason="broker_unavailable"\} 1/)

  const seen = { errors: 0 }
  const es = new EventSource(sseUrl(url, 'product:7'))
  t.teardown(() => es.close())
  es.addEventListener('error', () => { seen.errors++ })
  const connected = new Promise<void>((resolve) => es.addEventListener('system:connected', () => resolve()))
  const deadline = Date.now() + 5000
  while (seen.errors === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  t.ok(seen.errors > 0, 'the stream ended')
  t.not(es.readyState, EventSource.CLOSED, 'and EventSource has not given up')
  state.down = false
  await Promise.race([connected, new Promise((resolve, reject) => setTimeout(() => reject(new Error('no reconnect within 8 s')), 8000))])
  t.equal(es.readyState, EventSource.OPEN, 'it came back by itself once the broker was back')
  const event = new Promise<MessageEvent>((resolve) => es.addEventListener('price:changed', resolve))
  await publish(url, 'product:7', { n: 1 }, 'price:changed')
  t.match(JSON.parse((await event).data), { channel: 'product:7', offset: 1 })
})
