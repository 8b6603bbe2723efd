import { EventEmitter, once } from 'node:events'
import { createServer, type ServerResponse } from 'node:http'
import { connect, type Socket } from 'node:net'
import fastifyWebsocket from '@fastify/websocket'
import Fastify from 'fastify'
import t, { type Test } from 'tap'
import WebSocket, { WebSocketServer } from 'ws'
import { ANONYMOUS } from '../../lib/auth/identity.js'
import { EncodedEvent } from '../../lib/core/event.js'
import { WriteBatch } from '../../lib/core/write-batch.js'
import { compactListeners, detachUpgradeResponse, rawSocketOf, releaseHijackedReply, releaseHttpConnection, releaseReadBuffers } from '../../lib/transport/internals.js'
import { WsConnection } from '../../lib/transport/ws-connection.js'
import { eventually } from '../support/redis-fixture.js'

// Canaries for lib/transport/internals.ts: each reach into `ws` or Node internals, against
// the real objects of the installed versions. Every reach degrades quietly (the gateway
// still works, it only costs memory or throughput again), so it is here that an upgrade
// which moves one must fail. If one does, see what the module's header says it bought.

/** A real ws server and client pair on loopback; the server's side of the socket. */
async function pair (t: Test): Promise<{ socket: WebSocket, client: WebSocket }> {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false })
  await once(server, 'listening')
  t.teardown(() => new Promise<void>((resolve) => { for (const c of server.clients) c.terminate(); server.close(() => resolve()) }))
  const { port } = server.address() as { port: number }
  const client = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false })
  const [[socket]] = await Promise.all([once(server, 'connection') as Promise<[WebSocket]>, once(client, 'open')])
  socket.on('error', () => {})
  client.on('error', () => {})
  return { socket, client }
}

const event = (n: number): EncodedEvent => new EncodedEvent({
  channel: 'room:i', type: 'e', payload: { n }, offset: n, epoch: 'x', ts: new Date(0).toISOString()
})

t.test('ws._socket: the TCP socket under a WebSocket, and a frame written to it arrives', async (t) => {
  const { socket, client } = await pair(t)
  const raw = rawSocketOf(socket)
  t.ok(raw, 'ws still keeps the TCP socket as _socket')
  t.equal(typeof raw?.cork, 'function')
  t.equal(typeof raw?.uncork, 'function')
  t.equal(typeof raw?.writableLength, 'number')
  // The prebuilt frame is what the gateway writes there: it must be a frame ws's client reads.
  const received = once(client, 'message')
  raw?.write(event(1).wsFrameBytes)
  const [data] = await received
  t.same(JSON.parse(String(data)).payload, { n: 1 })
})

t.test('ws._receiver._buffers: the read chunk list is an array, emptied after a frame is read', async (t) => {
  const { socket, client } = await pair(t)
  const released: boolean[] = []
  socket.on('message', () => { released.push(releaseReadBuffers(socket)) })
  client.send('one')
  await once(socket, 'message')
  t.same(released, [true], 'ws still keeps its read chunks in _receiver._buffers, empty after the frame')
  // ws reads the list afresh: frames after the swap still arrive.
  client.send('two')
  const [data] = await once(socket, 'message')
  t.equal(String(data), 'two')
})

t.test('EventEmitter._events: a real ws socket\'s listener table is the null-prototype object compacted', async (t) => {
  const { socket } = await pair(t)
  socket.on('message', () => {})
  socket.on('pong', () => {})
  socket.on('close', () => {})
  const before = (socket as unknown as { _events: object })._events
  t.equal(Object.getPrototypeOf(before), null, 'Node still keeps listeners in a null-prototype _events')
  t.equal(compactListeners(socket), true)
  const after = (socket as unknown as { _events: object })._events
  t.not(after, before)
  t.same(Reflect.ownKeys(after), Reflect.ownKeys(before), 'every event name moved')
  t.equal(compactListeners(socket), false, 'a compacted table is left as it is')
  t.equal(compactListeners(new EventEmitter()), true, 'a bare emitter too')
})

t.test('net.Socket._httpMessage: @fastify/websocket leaves the upgrade\'s response on the socket', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyWebsocket)
  const seen: Array<{ before: boolean, detached: boolean, after: unknown }> = []
  app.get('/ws', { websocket: true }, (socket, request) => {
    const raw = request.raw.socket as Socket & { _httpMessage?: unknown }
    const before = raw._httpMessage !== null && raw._httpMessage !== undefined
    const detached = detachUpgradeResponse(raw)
    seen.push({ before, detached, after: raw._httpMessage })
    socket.send('hi')
  })
  const address = await app.listen({ host: '127.0.0.1', port: 0 })
  const client = new WebSocket(`${address.replace('http', 'ws')}/ws`)
  client.on('error', () => {})
  await once(client, 'message')
  client.terminate()
  t.same(seen, [{ before: true, detached: true, after: null }], 'the response was on the socket, and is no longer')
})

t.test('without ws._socket, frames go through socket.send, in order, and nothing is corked', async (t) => {
  const { socket, client } = await pair(t)
  // A ws that keeps no _socket, as another version might: every read of it finds nothing.
  const hidden = new Proxy(socket, {
    get: (target, key) => key === '_socket' ? undefined : Reflect.get(target, key, target)
  })
  t.equal(rawSocketOf(hidden), undefined)
  const raw = rawSocketOf(socket) as Socket
  const batch = new WriteBatch()
  const connection = new WsConnection('c1', ANONYMOUS, hidden, { sendBufferLimit: 1 << 20, writeBatch: batch })
  const received: string[] = []
  client.on('message', (data) => received.push(String(data)))
  const all = new Promise<void>((resolve) => client.on('message', () => { if (received.length === 4) resolve() }))
  connection.sendEvent(event(1))
  batch.inBurst(() => {
    connection.sendEvent(event(2))
    connection.send('{"type":"text"}')
    t.equal(raw.writableCorked, 0, 'the socket is never corked')
  })
  connection.sendEvent(event(3))
  await all
  t.same(received.map((r) => JSON.parse(r).payload?.n ?? JSON.parse(r).type), [1, 2, 'text', 3])
  connection.flush()
  t.equal(raw.writableCorked, 0)
})

t.test('onResFinished: Fastify keeps its reply on a hijacked response through finish and error listeners', async (t) => {
  const app = Fastify({ logger: { level: 'silent' } })
  t.teardown(() => app.close())
  const seen: Array<{ removed: number, finish: string[], error: string[] }> = []
  app.get('/stream', async (_request, reply) => {
    reply.hijack()
    const res = reply.raw
    const removed = releaseHijackedReply(res)
    seen.push({ removed, finish: res.listeners('finish').map((l) => l.name), error: res.listeners('error').map((l) => l.name) })
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end('done')
  })
  const address = await app.listen({ host: '127.0.0.1', port: 0 })
  t.equal(await (await fetch(`${address}/stream`)).text(), 'done', 'the response still ends as it should')
  t.equal(seen[0]?.removed, 2, 'Fastify still adds onResFinished for finish and error')
  t.notOk(seen[0]?.finish.includes('onResFinished'), 'none left on finish')
  t.ok((seen[0]?.finish.length ?? 0) > 0, 'Node\'s own finish listener stays')
  t.same(seen[0]?.error, [])
})

/**
 * A real node:http server streaming a chunked response (an SSE stream's shape) to a raw TCP
 * client that sent `request` in one write; the release is tried a turn after the first
 * request (as the gateway does: see releaseHttpConnection).
 */
async function streamed (t: Test, request = 'GET /sse HTTP/1.1\r\nHost: x\r\n\r\n'): Promise<{ client: Socket, res: ServerResponse, released: boolean, received: () => string }> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const client = connect((server.address() as { port: number }).port, '127.0.0.1')
  client.on('error', () => {})
  t.teardown(() => new Promise<void>((resolve) => { client.destroy(); server.closeAllConnections(); server.close(() => resolve()) }))
  const opened = new Promise<{ res: ServerResponse, released: boolean }>((resolve) => {
    server.once('request', (_req, res: ServerResponse) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', connection: 'close' })
      res.flushHeaders()
      setImmediate(() => resolve({ res, released: releaseHttpConnection(res.socket as Socket, res) }))
    })
  })
  let text = ''
  client.on('data', (data) => { text += String(data) })
  client.write(request)
  const { res, released } = await opened
  return { client, res, released, received: () => text }
}

t.test('releaseHttpConnection: Node\'s HTTP server state leaves a streaming socket, the stream goes on', async (t) => {
  const { client, res, released, received } = await streamed(t)
  const socket = res.socket as Socket & { parser?: unknown }
  t.ok(released, 'Node still binds socketOnData, socketOnEnd, socketOnClose and socketOnDrain, and _http_common still has freeParser')
  t.equal(socket.parser, null, 'the parser is freed')
  for (const [event, name] of [['data', 'bound socketOnData'], ['end', 'bound socketOnEnd'], ['close', 'bound socketOnClose'], ['drain', 'bound socketOnDrain'], ['pause', 'onSocketPause'], ['resume', 'onSocketResume']]) {
    t.notOk(socket.listeners(event).some((l) => l.name === name), `no ${name}`)
  }
  t.equal(socket.on, Object.getPrototypeOf(socket).on, 'the socket\'s own on is back')
  socket.write('5\r\nhello\r\n')
  await eventually('the chunk', () => received().includes('hello'))
  client.write('GET /again HTTP/1.1\r\nHost: x\r\n\r\n')
  socket.write('5\r\nworld\r\n')
  await eventually('the next chunk', () => received().includes('world'))
  t.notOk(socket.destroyed, 'bytes from the client are dropped, the stream goes on')
  t.equal((received().match(/HTTP\/1\.1 200/g) ?? []).length, 1, 'no second request was read')
  // Node 20 put a parser freed within its own read back in the server's list, and these
  // then threw on its missing socket.
  t.doesNotThrow(() => { (res.socket as unknown as { server: { closeIdleConnections: () => void } }).server.closeIdleConnections() }, 'the server\'s closeIdleConnections')
  t.notOk(socket.destroyed, 'which leaves the stream alone')
  const closed = once(res, 'close')
  client.destroy()
  await closed
  t.pass('the client gone: the response still closes')
})

t.test('releaseHttpConnection: the client\'s end ends the socket; the response\'s end closes it', async (t) => {
  const first = await streamed(t)
  const ended = once(first.client, 'end')
  first.client.end()
  await ended
  t.pass('a client that ends its side is ended too (no half-open stream)')
  const second = await streamed(t)
  const closed = once(second.client, 'close')
  second.res.end()
  await closed
  t.match(second.received(), /0\r\n\r\n$/, 'the last chunk, then the connection closes (Connection: close)')
})

t.test('releaseHttpConnection leaves a socket a later request was read from, and a request not read whole', async (t) => {
  // Review (session 32): a second request in the same packet is parsed and queued before
  // the release; only the server's own close listener ends its response when the client goes.
  const pipelined = await streamed(t, 'GET /sse HTTP/1.1\r\nHost: x\r\n\r\nGET /sse HTTP/1.1\r\nHost: x\r\n\r\n')
  const socket = pipelined.res.socket as Socket & { parser?: unknown }
  t.equal(pipelined.released, false, 'a later request read already: kept')
  t.not(socket.parser, null, 'its parser stays')
  t.ok(socket.listeners('close').some((l) => l.name === 'bound socketOnClose'), 'and the server\'s close listener')
  const partial = await streamed(t, 'POST /sse HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc')
  t.equal(partial.released, false, 'a body still to come: kept (the request timeout still applies)')
  const whole = await streamed(t)
  t.equal(whole.released, true, 'the same stream alone on its connection: released')
})

t.test('releaseReadBuffers and detachUpgradeResponse leave objects they do not know alone', async (t) => {
  t.equal(releaseReadBuffers({} as WebSocket), false)
  t.equal(releaseReadBuffers({ _receiver: { _buffers: [1] } } as unknown as WebSocket), false, 'chunks still waiting are kept')
  t.equal(detachUpgradeResponse({} as Socket), false)
  t.equal(rawSocketOf({ _socket: {} } as unknown as WebSocket), undefined)
  t.equal(releaseHijackedReply(new EventEmitter() as unknown as ServerResponse), 0, 'nothing to remove')
  const req = { complete: true }
  const res = { req } as unknown as ServerResponse
  const plain = new EventEmitter() as unknown as Socket
  t.equal(releaseHttpConnection(plain, res), false, 'a socket no HTTP server serves')
  const unknown = Object.assign(new EventEmitter(), { parser: { finish: () => {}, incoming: req } }) as unknown as Socket
  unknown.on('data', function socketOnData () {})
  t.equal(releaseHttpConnection(unknown, res), false, 'listeners not as Node binds them: nothing removed')
  t.equal(unknown.listenerCount('data'), 1)
})
