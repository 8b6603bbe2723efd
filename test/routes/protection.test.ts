import { once } from 'node:events'
import { connect } from 'node:net'
import t from 'tap'
import WebSocket from 'ws'
import { post, serviceToken, SseClient, sleep, startServer, token, WsClient } from '../support/helper.js'

t.test('a client that stops reading is cut off (4008) while a healthy one receives everything', async (t) => {
  const { url, wsUrl, app } = await startServer(t, { SEND_BUFFER_LIMIT_BYTES: 64 * 1024, HTTP_RATE_LIMIT_PER_MINUTE: 100_000 })
  const healthy = await WsClient.connect(t, wsUrl, token('1'))
  const stalled = await WsClient.connect(t, wsUrl, token('2'))
  await healthy.subscribe(['room:flood'])
  await stalled.subscribe(['room:flood'])
  // Stop reading: the kernel buffers fill, then the server's send buffer grows past the limit.
  const rawSocket = (stalled.socket as unknown as { _socket: { pause(): void } })._socket
  rawSocket.pause()

  const big = 'x'.repeat(32 * 1024)
  const total = 400
  for (let i = 0; i < total; i++) {
    await app.hub.broker.publish({ channel: 'room:flood', type: 'flood', payload: { i, big } })
    // Paced like a real stream, so a reading client drains as fast as events come.
    await new Promise((resolve) => setImmediate(resolve))
  }
  const received: number[] = []
  while (received.length < total) {
    const frame = await healthy.next((f) => f.type === 'flood', 10_000)
    received.push(frame.offset)
  }
  t.same(received, Array.from({ length: total }, (_, i) => i + 1), 'the healthy client got every event, in order')

  // The server gave up on the stalled one; its buffer is bounded, not the whole flood.
  const deadline = Date.now() + 5000
  while (app.hub.connectionCount() > 1 && Date.now() < deadline) await sleep(50)
  t.equal(app.hub.connectionCount(), 1, 'the stalled connection was dropped by the server')
  const metrics = await (await fetch(`${url}/metrics`)).text()
  t.match(metrics, /gateway_slow_client_disconnects_total\{transport="ws"\} 1/)
})

t.test('a flood of WebSocket pings: rate_limited errors, then the 1008 close frame (ws alone cut the socket: 1006)', async (t) => {
  // Defaults: a burst of 100 and 20 strikes. 300 pings in one go, as a flooding client sends them.
  const { wsUrl } = await startServer(t)
  const client = await WsClient.connect(t, wsUrl, token('7'))
  let pongs = 0
  client.socket.on('pong', () => { pongs++ })
  for (let i = 0; i < 300; i++) client.socket.ping()
  const { code } = await client.closed
  t.equal(code, 1008, 'the close frame arrives, with 1008')
  const limited = client.frames.filter((f) => f.type === 'error' && f.payload.code === 'rate_limited')
  t.equal(limited.length, 20, 'after rate_limited errors up to the strike limit')
  // 100 of the burst, 20 refused, the one that closed (ws answers a ping before the gateway
  // sees it): 121, and a token or two more when the flood takes longer than 20 ms to arrive.
  t.ok(pongs >= 100 && pongs <= 125, `the burst was answered, and pongs stopped at the close (${pongs})`)
})

t.test('a flood of unasked WebSocket pongs counts against the rate limit like pings: rate_limited errors, then 1008', async (t) => {
  const { wsUrl } = await startServer(t)
  const client = await WsClient.connect(t, wsUrl, token('7'))
  for (let i = 0; i < 300; i++) client.socket.pong()
  const { code } = await client.closed
  t.equal(code, 1008, 'the close frame arrives, with 1008')
  t.equal(client.frames.filter((f) => f.type === 'error' && f.payload.code === 'rate_limited').length, 20, 'after rate_limited errors up to the strike limit')
})

t.test('a message in more fragments than a client needs is refused with 1008 (each fragment is work the rate limit does not see)', async (t) => {
  const { wsUrl } = await startServer(t)
  const client = await WsClient.connect(t, wsUrl, token('7'))
  // ws's own fragmenting: a message sent in pieces, `fin` on the last. 200 pieces still make a message.
  const piece = (text: string, fin: boolean) => new Promise<void>((resolve) => client.socket.send(text, { fin }, () => resolve()))
  const whole = JSON.stringify({ type: 'system:ping', id: 'in-pieces' })
  for (let i = 0; i < 200; i++) await piece(i === 0 ? whole : '', false)
  await piece('', true)
  t.same((await client.next((f) => f.id === 'in-pieces')).type, 'system:pong', '200 fragments: one message, answered')
  for (let i = 0; i < 1000; i++) void piece('', false)
  const { code } = await client.closed
  t.equal(code, 1008, 'a thousand empty fragments: closed with 1008')
})

t.test('inbound flooding: rate_limited errors, then close 1008', async (t) => {
  const { wsUrl } = await startServer(t, { WS_RATE_LIMIT_PER_SECOND: 5, WS_RATE_LIMIT_BURST: 5, WS_RATE_LIMIT_STRIKES: 3 })
  const client = await WsClient.connect(t, wsUrl, token('7'))
  for (let i = 0; i < 20; i++) client.send({ type: 'system:ping', id: i })
  const { code } = await client.closed
  t.equal(code, 1008)
  const pongs = client.frames.filter((f) => f.type === 'system:pong')
  const limited = client.frames.filter((f) => f.type === 'error' && f.payload.code === 'rate_limited')
  t.equal(pongs.length, 5, 'the burst was served')
  t.equal(limited.length, 3, 'then rate_limited errors, up to the strike limit')
})

t.test('a client within its rate keeps its connection', async (t) => {
  const { wsUrl } = await startServer(t, { WS_RATE_LIMIT_PER_SECOND: 50, WS_RATE_LIMIT_BURST: 50 })
  const client = await WsClient.connect(t, wsUrl, token('7'))
  for (let i = 0; i < 40; i++) client.send({ type: 'system:ping', id: i })
  for (let i = 0; i < 40; i++) await client.next((f) => f.type === 'system:pong' && f.id === i)
  t.equal(client.frames.filter((f) => f.type === 'error').length, 0)
})

t.test('a frame over the size limit closes with 1009; others are unaffected', async (t) => {
  const { wsUrl } = await startServer(t, { WS_MAX_PAYLOAD_BYTES: 1024 })
  const big = await WsClient.connect(t, wsUrl, token('1'))
  const other = await WsClient.connect(t, wsUrl, token('2'))
  big.send({ type: 'system:ping', pad: 'x'.repeat(2048) })
  t.equal((await big.closed).code, 1009)
  t.equal((await other.request({ type: 'system:ping' })).type, 'system:pong')
})

t.test("connection limits: per user and per instance refuse with 1013 (WS); over SSE a user's is a 503, a full instance says come back", async (t) => {
  const { url, wsUrl } = await startServer(t, { MAX_CONNECTIONS_PER_USER: 1, MAX_CONNECTIONS: 2 })
  await WsClient.connect(t, wsUrl, token('1'))
  const second = new WebSocket(`${wsUrl}?token=${token('1')}`)
  const [code] = await new Promise<[number]>((resolve) => second.on('close', (c) => resolve([c])))
  t.equal(code, 1013, 'a second connection of the same user')

  const sse = await SseClient.open(t, `${url}/sse?token=${token('1')}`)
  t.equal(sse.status, 503)

  await WsClient.connect(t, wsUrl, token('2'))
  const third = new WebSocket(`${wsUrl}?token=${token('3')}`)
  const [code3] = await new Promise<[number]>((resolve) => third.on('close', (c) => resolve([c])))
  t.equal(code3, 1013, 'past the instance limit')
  // Audit: EventSource gives up for good on a 503; streams a deploy moved onto full instances stayed dead.
  const full = await fetch(`${url}/sse?token=${token('3')}`)
  t.equal(full.status, 200, 'a stream past the instance limit is answered as a stream')
  const told = /^retry: (\d+)\nevent: system:unavailable\ndata: (.*)\n\n$/.exec(await full.text())
  t.match(JSON.parse(told?.[2] ?? '{}'), { status: 503, reason: 'instance connection limit reached' }, 'that says come back, and why')
  t.ok(Number(told?.[1]) >= 5000 && Number(told?.[1]) < 10_000, `in 5-10 s (${told?.[1]} ms), not at once`)

  // One admission policy: both transports count their refusals under the same snake_case reasons.
  const metrics = await (await fetch(`${url}/metrics`)).text()
  t.match(metrics, /gateway_connections_refused_total\{transport="ws",reason="user_limit"\} 1\n/)
  t.match(metrics, /gateway_connections_refused_total\{transport="sse",reason="user_limit"\} 1\n/)
  t.match(metrics, /gateway_connections_refused_total\{transport="ws",reason="instance_limit"\} 1\n/)
  t.match(metrics, /gateway_connections_refused_total\{transport="sse",reason="instance_limit"\} 1\n/)
})

t.test('a connection that stops answering pings is closed after two intervals', async (t) => {
  const { app, wsUrl } = await startServer(t, { HEARTBEAT_MS: 150 })
  const mute = new WebSocket(`${wsUrl}?token=${token('1')}`, { autoPong: false })
  const answering = await WsClient.connect(t, wsUrl, token('2'))
  const closed = new Promise<number>((resolve) => mute.on('close', (c) => resolve(c)))
  await closed
  t.pass('the mute connection was closed')
  await sleep(600)
  t.equal(answering.socket.readyState, WebSocket.OPEN, 'the answering one stays open')
  t.equal(app.hub.connectionCount(), 1)
})

t.test('an expired token closes the connection with 4001 unless refreshed', async (t) => {
  const { wsUrl } = await startServer(t)
  const expiring = await WsClient.connect(t, wsUrl, token('5', [], 1))
  const refreshed = await WsClient.connect(t, wsUrl, token('6', [], 1))
  const ack = await refreshed.request({ type: 'auth:refresh', payload: { token: token('6', [], 60) } })
  t.equal(ack.type, 'auth:refreshed')
  t.equal((await expiring.closed).code, 4001)
  await sleep(300)
  t.equal(refreshed.socket.readyState, WebSocket.OPEN, 'the refreshed connection lives on')
  t.equal((await refreshed.request({ type: 'system:ping' })).type, 'system:pong')
})

t.test('bad HTTP input harms no one else: the subscriber still gets the next good event', async (t) => {
  const { url, wsUrl } = await startServer(t, { BODY_LIMIT_BYTES: 2048 })
  const client = await WsClient.connect(t, wsUrl, token('9'))
  t.equal((await post(`${url}/realtime/notify`, serviceToken(), '{"userId": ')).status, 400)
  t.equal((await post(`${url}/realtime/notify`, serviceToken(), { userId: '9', payload: { pad: 'x'.repeat(4096) } })).status, 413)
  t.equal((await post(`${url}/realtime/notify`, serviceToken(), { userId: '9', payload: { ok: true } })).status, 202)
  const event = await client.next((f) => f.type === 'notification')
  t.same(event.payload, { ok: true })
})

t.test('an SSE stream ends when its token expires, saying so (system:disconnect 4001), and the same token is then refused', async (t) => {
  const { url } = await startServer(t)
  const expiring = token('5', [], 1)
  const stream = await SseClient.open(t, `${url}/sse?token=${expiring}`)
  t.equal(stream.status, 200)
  await stream.waitFor(1, (e) => e.event === 'system:connected')
  const [told] = await stream.waitFor(1, (e) => e.event === 'system:disconnect', 5000)
  t.same(told.data, { code: 4001, reason: 'token expired' }, 'it says why, as a WebSocket\'s close code does')
  const deadline = Date.now() + 5000
  while (!stream.ended && Date.now() < deadline) await sleep(50)
  t.ok(stream.ended, 'the server ended the stream')
  const again = await SseClient.open(t, `${url}/sse?token=${expiring}`)
  t.equal(again.status, 401)
})

t.test('an SSE reader that stops reading has its stream ended while a healthy one gets everything', async (t) => {
  const { url, app } = await startServer(t, { SEND_BUFFER_LIMIT_BYTES: 64 * 1024 })
  const healthy = await SseClient.open(t, `${url}/sse?channels=room:sse-flood&token=${token('1')}`)
  await healthy.waitFor(1, (e) => e.event === 'system:connected')

  // A raw HTTP client that sends the request and then never reads the response.
  const { port } = new URL(url)
  const stalled = connect({ host: '127.0.0.1', port: Number(port) })
  t.teardown(() => stalled.destroy())
  await once(stalled, 'connect')
  stalled.write(`GET /sse?channels=room:sse-flood&token=${token('2')} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n`)
  await once(stalled, 'data')
  stalled.pause()
  const deadline0 = Date.now() + 5000
  while (app.hub.connectionCount() < 2 && Date.now() < deadline0) await sleep(20)

  const big = 'y'.repeat(32 * 1024)
  const total = 300
  for (let i = 0; i < total; i++) {
    await app.hub.broker.publish({ channel: 'room:sse-flood', type: 'flood', payload: { i, big } })
    await new Promise((resolve) => setImmediate(resolve))
  }
  const events = await healthy.waitFor(total, (e) => e.event === 'flood', 20_000)
  t.same(events.map((e) => e.data.offset), Array.from({ length: total }, (_, i) => i + 1), 'the healthy stream got every event, in order')

  const deadline = Date.now() + 5000
  while (app.hub.connectionCount() > 1 && Date.now() < deadline) await sleep(50)
  t.equal(app.hub.connectionCount(), 1, 'the stalled stream was ended by the server')
  const metrics = await (await fetch(`${url}/metrics`)).text()
  t.match(metrics, /gateway_slow_client_disconnects_total\{transport="sse"\} 1/)
})

t.test('flooding at a few times the rate is closed with 1008 too, though some frames get through between refusals', async (t) => {
  // Audit: strikes counted refusals in a row and any accepted frame reset them, so 500
  // frames/s against 50/s (one frame through every 20 ms) drew errors for ever, never 1008.
  const { wsUrl } = await startServer(t, { WS_RATE_LIMIT_PER_SECOND: 50, WS_RATE_LIMIT_BURST: 50, WS_RATE_LIMIT_STRIKES: 20 })
  const client = await WsClient.connect(t, wsUrl, token('7'))
  let sent = 0
  const timer = setInterval(() => { for (let i = 0; i < 5 && client.socket.readyState === WebSocket.OPEN; i++) client.send({ type: 'system:ping', id: sent++ }) }, 10)
  t.teardown(() => clearInterval(timer))
  const closed = await Promise.race([client.closed, sleep(10_000).then(() => null)])
  clearInterval(timer)
  t.match(closed, { code: 1008 }, `closed as flooding after ${sent} frames`)
  t.ok(client.frames.some((f) => f.type === 'system:pong' && f.id > 60), 'some frames had been served between the refusals')
})

t.test('a burst over the limit that then backs off is forgiven: the next burst starts with no strikes', async (t) => {
  const { wsUrl } = await startServer(t, { WS_RATE_LIMIT_PER_SECOND: 5, WS_RATE_LIMIT_BURST: 5, WS_RATE_LIMIT_STRIKES: 3 })
  const client = await WsClient.connect(t, wsUrl, token('7'))
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 8; i++) client.send({ type: 'system:ping', id: `${round}-${i}` }) // 5 served, 3 refused: at the limit, not past it
    await client.next((f) => f.type === 'error' && f.id === `${round}-7`)
    await sleep(1200)
  }
  t.equal(client.socket.readyState, WebSocket.OPEN, 'still open after three bursts, each followed by a quiet second')
})
