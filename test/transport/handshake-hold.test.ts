import { once } from 'node:events'
import { createServer, Socket } from 'node:net'
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { holdHandshake, isHandshakeHeld, releaseHandshake } from '../../lib/transport/handshake-hold.js'
import { startServer, token, WsClient } from '../support/helper.js'

// The 101 and the greeting leave in one write (lib/transport/handshake-hold.ts), over real
// sockets: writes are counted where the server's TCP socket hands them to the kernel.

interface Counted { socket: Socket, writes: string[] }

/** Every socket the server accepts, with the writes it makes (a corked batch is one). */
function countWrites (server: { on(event: 'connection', listener: (socket: Socket) => void): unknown }): Counted[] {
  const accepted: Counted[] = []
  server.on('connection', (socket: Socket) => {
    const counted: Counted = { socket, writes: [] }
    accepted.push(counted)
    const write = socket._write.bind(socket)
    const writev = socket._writev?.bind(socket)
    socket._write = (chunk, encoding, callback) => { counted.writes.push(String(chunk)); write(chunk, encoding, callback) }
    if (writev !== undefined) {
      socket._writev = (chunks, callback) => { counted.writes.push(chunks.map((c) => String(c.chunk)).join('')); writev(chunks, callback) }
    }
  })
  return accepted
}

t.test('a WebSocket connect: the 101 and system:connected in one write, then the subscribe answer in one', async (t) => {
  const { app, wsUrl } = await startServer(t)
  const accepted = countWrites(app.server)
  const client = await WsClient.connect(t, wsUrl, token('42'), { viaHeader: true })
  t.equal(client.greeting.type, 'system:connected')
  const [server] = accepted
  t.equal(server.writes.length, 1, 'one write so far')
  t.match(server.writes[0], /^HTTP\/1\.1 101 Switching Protocols\r\n/)
  t.match(server.writes[0], /"type":"system:connected"/, 'the greeting in the same write')
  t.notOk(isHandshakeHeld(server.socket), 'the hold is let go')

  const answer = await client.request({ type: 'subscribe', payload: { channels: ['product:1', 'product:2'] } })
  t.equal(answer.type, 'subscribed')
  t.equal(server.writes.length, 2, 'the answer is the second write')
})

t.test('a refused upgrade answers at once; a connection refused by the limits gets its 1013 and is not held', async (t) => {
  const { app, wsUrl } = await startServer(t, { MAX_CONNECTIONS_PER_USER: 1 })
  const accepted = countWrites(app.server)
  await t.rejects(WsClient.connect(t, wsUrl, 'not-a-jwt'), { message: 'HTTP 401' })
  t.notOk(isHandshakeHeld(accepted[0].socket), 'a 401 was never held')

  await WsClient.connect(t, wsUrl, token('1'))
  const second = new WebSocket(`${wsUrl}?token=${token('1')}`)
  const [code] = await once(second, 'close') as [number]
  t.equal(code, 1013)
  t.notOk(isHandshakeHeld(accepted[2].socket), 'the refused connection was let go')
})

t.test('a greeting that never comes does not keep the 101 back', async (t) => {
  const { app, wsUrl } = await startServer(t)
  // A broker whose subscribe never answers (a Redis that hangs): the 101 still leaves.
  const broker = app.hub.broker as unknown as { subscribe: (...args: unknown[]) => Promise<unknown> }
  broker.subscribe = async () => await new Promise(() => {})
  const socket = new WebSocket(`${wsUrl}?token=${token('7')}`)
  t.teardown(() => socket.terminate())
  const opened = Date.now()
  await once(socket, 'open')
  t.ok(Date.now() - opened < 5000, 'open within the hold')
  const frames: string[] = []
  socket.on('message', (data) => frames.push(String(data)))
  socket.send(JSON.stringify({ type: 'system:ping', id: 'p' }))
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.same(frames, [], 'frames stay held until the greeting, as before')
})

/** Waits until `done` holds (checked every 10 ms), for at most 5 s. */
async function until (done: () => boolean): Promise<void> {
  for (let waited = 0; !done() && waited < 5000; waited += 10) await new Promise((resolve) => setTimeout(resolve, 10))
}

async function socketPair (t: Test): Promise<{ server: Socket, client: Socket, received: () => string }> {
  const listener = createServer()
  listener.listen(0, '127.0.0.1')
  await once(listener, 'listening')
  const { port } = listener.address() as { port: number }
  const client = new Socket()
  const [[server]] = await Promise.all([once(listener, 'connection') as Promise<[Socket]>, new Promise<void>((resolve) => client.connect(port, '127.0.0.1', resolve))])
  t.teardown(() => { client.destroy(); server.destroy(); listener.close() })
  let text = ''
  client.on('data', (chunk) => { text += String(chunk) })
  return { server, client, received: () => text }
}

t.test('holdHandshake: what is written waits for the release, or for the time limit', async (t) => {
  const { server, received } = await socketPair(t)
  holdHandshake(server, 60_000)
  server.write('101')
  server.write('+greeting')
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(received(), '', 'nothing leaves while held')
  releaseHandshake(server)
  await until(() => received() !== '')
  t.equal(received(), '101+greeting')

  // Once: a second release does not uncork what someone else corked since.
  server.cork()
  releaseHandshake(server)
  t.equal(server.writableCorked, 1, 'the later cork stands')
  server.uncork()

  const other = await socketPair(t)
  holdHandshake(other.server, 50)
  holdHandshake(other.server, 50) // held already: no second cork
  other.server.write('late')
  await until(() => other.received() !== '')
  t.equal(other.received(), 'late', 'let go by the time limit')
  t.equal(other.server.writableCorked, 0)
  t.notOk(isHandshakeHeld(other.server))
})
