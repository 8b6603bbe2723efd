import { connect, type Socket } from 'node:net'
import t from 'tap'
import { SseClient, sleep, startServer, token, WsClient } from '../support/helper.js'

/**
 * A rewind (or resume) replays a channel's history in one go, and a history may be much
 * larger than the per-connection send buffer (100 events of 60 KB: 6 MB, against 1 MiB). A
 * client reading as fast as it can must get all of it, not 4008 (docs/protocol.md,
 * "Limits"); a client that is already behind, or asks again before what it was sent has
 * left, is still cut.
 */
const EVENTS = 100
const big = 'z'.repeat(60_000)

async function bigHistory (t: Parameters<typeof startServer>[0], overrides: Record<string, string | number> = {}) {
  const server = await startServer(t, { HISTORY_POLICY: 'room:=100/300', ...overrides })
  for (let i = 1; i <= EVENTS; i++) await server.app.hub.broker.publish({ channel: 'room:big', type: 'state', payload: { i, big } })
  return server
}

t.test('a WebSocket rewind of a 6 MB history arrives whole through a 1 MiB send buffer', async (t) => {
  const { wsUrl } = await bigHistory(t)
  const client = await WsClient.connect(t, wsUrl, token('7'))
  const answer = await client.request({ type: 'subscribe', id: 'r', payload: { channels: ['room:big'], rewind: EVENTS } })
  t.match(answer, { type: 'subscribed', payload: { positions: { 'room:big': { offset: EVENTS } } } })
  const offsets: number[] = []
  while (offsets.length < EVENTS) offsets.push((await client.next((f) => f.type === 'state', 10_000)).offset)
  t.same(offsets, Array.from({ length: EVENTS }, (_, i) => i + 1), 'every event, in order')
  const closed = await Promise.race([client.closed, sleep(300).then(() => null)])
  t.equal(closed, null, 'and the connection stays open')
})

t.test('an SSE rewind of a 6 MB history arrives whole through a 1 MiB send buffer', async (t) => {
  const { url } = await bigHistory(t)
  const stream = await SseClient.open(t, `${url}/sse?channels=room:big&rewind=${EVENTS}&token=${token('7')}`)
  const events = await stream.waitFor(EVENTS, (e) => e.event === 'state', 10_000)
  t.same(events.map((e) => e.data.offset), Array.from({ length: EVENTS }, (_, i) => i + 1), 'every event, in order')
})

t.test('a client that stops reading and asks for the history again and again is cut (4008), its backlog bounded', async (t) => {
  const { app, url, wsUrl } = await bigHistory(t)
  const client = await WsClient.connect(t, wsUrl, token('8'))
  ;(client.socket as unknown as { _socket: { pause(): void } })._socket.pause()
  for (let round = 0; round < 20 && app.hub.connectionCount() > 0; round++) {
    client.socket.send(JSON.stringify({ type: 'unsubscribe', payload: { channels: ['room:big'] } }))
    client.socket.send(JSON.stringify({ type: 'subscribe', payload: { channels: ['room:big'], rewind: EVENTS } }))
    await sleep(100)
  }
  const deadline = Date.now() + 5000
  while (app.hub.connectionCount() > 0 && Date.now() < deadline) await sleep(50)
  t.equal(app.hub.connectionCount(), 0, 'the server cut the connection that kept asking without reading')
  const metrics = await (await fetch(`${url}/metrics`)).text()
  t.match(metrics, /gateway_slow_client_disconnects_total\{transport="ws"\} 1/, 'as too slow (4008), past the replay backlog allowed')
})

/** A raw SSE request whose socket is never read (a reader that stopped), read only when asked. */
async function pausedStream (t: Parameters<typeof startServer>[0], url: string, path: string): Promise<Socket> {
  const { hostname, port } = new URL(url)
  const socket = connect(Number(port), hostname)
  t.teardown(() => socket.destroy())
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.write(`GET ${path} HTTP/1.1\r\nHost: ${hostname}\r\nAccept: text/event-stream\r\n\r\n`)
  return socket
}

/** Everything the socket still delivers until it closes. */
async function drained (socket: Socket): Promise<string> {
  let text = ''
  socket.setEncoding('latin1')
  socket.on('data', (chunk: string) => { text += chunk })
  await new Promise((resolve) => socket.once('close', resolve))
  return text
}

/** 8 channels of 100 events of 60 KB: a rewind of the 8 is 48 MB, most of a user's room (64 MiB). */
async function eightBigChannels (t: Parameters<typeof startServer>[0]) {
  const channels = Array.from({ length: 8 }, (_, i) => `room:big-${i}`)
  const server = await startServer(t, { HISTORY_POLICY: 'room:=100/300' })
  for (const channel of channels) {
    for (let i = 1; i <= EVENTS; i++) await server.app.hub.broker.publish({ channel, type: 'state', payload: { i, big } })
  }
  return { ...server, channels }
}

const counter = async (url: string, pattern: RegExp): Promise<number> => Number(pattern.exec(await (await fetch(`${url}/metrics`)).text())?.[1] ?? 0)
const slowCuts = async (url: string, transport: string) => await counter(url, new RegExp(`gateway_slow_client_disconnects_total\\{transport="${transport}"\\} (\\d+)`))

/** A WebSocket client of `sub` that has stopped reading, whose rewind of `channels` the server has written and holds. */
async function pausedRewind (t: Parameters<typeof startServer>[0], wsUrl: string, sub: string, channels: string[]): Promise<WsClient> {
  const client = await WsClient.connect(t, wsUrl, token(sub))
  const raw = (client.socket as unknown as { _socket: Socket })._socket
  raw.pause()
  client.send({ type: 'subscribe', payload: { channels, rewind: EVENTS } })
  // Its replay is written (and held) once the client's socket has stopped taking bytes.
  await sleep(300)
  return client
}

t.test('one user\'s paused SSE streams rewinding large histories: past its room, the next are told to come back, before any of it is written; others still get theirs', async (t) => {
  // The user's first stream holds most of REPLAY_BACKLOG_USER_BYTES; its next ones cannot fit.
  // A black-box audit had 100 such streams copy 64 MiB each before being cut, stalling every
  // client; they were then opened and cut (4008), their rewinds lost (session 26).
  const { url, channels } = await eightBigChannels(t)
  const path = (sub: string) => `/sse?channels=${channels.join(',')}&rewind=${EVENTS}&token=${token(sub)}`
  const first = await pausedStream(t, url, path('greedy'))
  // The first stream's replay is written (and held) before the next ones ask.
  const deadline = Date.now() + 10_000
  while (first.writableLength === 0 && (first as unknown as { bytesRead: number }).bytesRead === 0 && Date.now() < deadline) await sleep(20)
  await sleep(200)
  for (let n = 0; n < 2; n++) {
    // A stream that says come back, not a 503: EventSource gives up for good on a 503 (review).
    const refused = await fetch(`${url}${path('greedy')}`, { headers: { accept: 'text/event-stream' } })
    t.equal(refused.status, 200, 'the user\'s next stream is refused')
    const text = await refused.text()
    t.match(text, /^retry: \d+\nevent: system:unavailable\ndata: \{"status":503,"reason":"[^"]*no room for this replay just now; try again/, 'told to come back in a moment, and why')
    t.notMatch(text, /event: state/, 'with none of its replay')
  }
  t.equal(await counter(url, /gateway_connections_refused_total\{transport="sse",reason="replay_room"\} (\d+)/), 2, 'counted as refused for replay room')
  t.equal(await slowCuts(url, 'sse'), 0, 'not opened and cut as too slow')
  const other = await SseClient.open(t, `${url}${path('other')}`)
  const events = await other.waitFor(EVENTS * channels.length, (e) => e.event === 'state', 20_000)
  t.equal(events.length, EVENTS * channels.length, 'another user\'s rewind of the same still arrives whole')
  first.destroy()
  await sleep(200)
  const again = await SseClient.open(t, `${url}${path('greedy')}`)
  const theirs = await again.waitFor(EVENTS * channels.length, (e) => e.event === 'state', 20_000)
  t.equal(theirs.length, EVENTS * channels.length, 'once its first stream is gone, the user\'s retry arrives whole')
})

t.test('a WebSocket subscribe whose rewind must wait for the user\'s room is refused (rate_limited), not acknowledged and cut; asked again later, it arrives whole', async (t) => {
  const { app, url, wsUrl, channels } = await eightBigChannels(t)
  const greedy = await pausedRewind(t, wsUrl, 'greedy-ws', channels)
  const second = await WsClient.connect(t, wsUrl, token('greedy-ws'))
  const answer = await second.request({ type: 'subscribe', payload: { channels, rewind: EVENTS } })
  t.match(answer, { type: 'error', payload: { code: 'rate_limited', message: /no room for this replay just now; try again/ } }, 'refused, to be asked again')
  await app.hub.broker.publish({ channel: 'room:big-0', type: 'state', payload: { i: 'after' } })
  const pong = await second.request({ type: 'system:ping' })
  t.equal(pong.type, 'system:pong', 'the connection stays open')
  t.equal(second.frames.filter((f) => f.type === 'state').length, 0, 'and holds none of the channels: no replay, no live event')
  t.equal(await slowCuts(url, 'ws'), 0, 'nobody was cut')

  greedy.socket.terminate()
  await sleep(200)
  const retried = await second.request({ type: 'subscribe', payload: { channels, rewind: EVENTS } })
  t.equal(retried.type, 'subscribed', 'asked again once the room is free, it is taken')
  const seen = new Map<string, number[]>()
  for (let n = 0; n < EVENTS * channels.length; n++) {
    const event = await second.next((f) => f.type === 'state', 10_000)
    seen.set(event.channel, [...seen.get(event.channel) ?? [], event.offset])
  }
  t.same(seen.get('room:big-0'), Array.from({ length: EVENTS }, (_, i) => i + 2), 'and the rewind arrives whole: the last 100 of each channel, in order')
  t.equal(seen.size, channels.length, 'of every channel')
})
t.test('an SSE rewind whose ids outweigh its events is weighed with them: refused before any of it is written', async (t) => {
  // 100 channels of 200-character names: every frame's `id:` names all 100 positions (some
  // 22 KB), so 100 events of a few bytes per channel make 220 MB of frames. Counting the
  // events' data alone (1 MB) let each such stream copy 64 MiB before it was cut (review).
  const channels = Array.from({ length: 100 }, (_, i) => `room:${String(i).padStart(3, '0')}-${'n'.repeat(191)}`)
  const server = await startServer(t, { HISTORY_POLICY: 'room:=100/300' })
  for (const channel of channels) {
    for (let i = 1; i <= EVENTS; i++) await server.app.hub.broker.publish({ channel, type: 'state', payload: { i } })
  }
  const stream = await pausedStream(t, server.url, `/sse?channels=${channels.join(',')}&rewind=${EVENTS}&token=${token('long-ids')}`)
  const slowCuts = async () => Number(/gateway_slow_client_disconnects_total\{transport="sse"\} (\d+)/.exec(
    await (await fetch(`${server.url}/metrics`)).text())?.[1] ?? 0)
  const deadline = Date.now() + 10_000
  while (await slowCuts() < 1 && Date.now() < deadline) await sleep(50)
  t.equal(await slowCuts(), 1, 'the stream was cut as too slow')
  const text = await drained(stream)
  t.match(text, /event: system:connected/, 'it was opened')
  t.notMatch(text, /event: state/, 'and none of its replay was written')
})
