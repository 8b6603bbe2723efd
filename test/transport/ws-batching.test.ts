import { once } from 'node:events'
import type { Socket } from 'node:net'
import t, { type Test } from 'tap'
import WebSocket, { WebSocketServer } from 'ws'
import { EncodedEvent, type PublishedEvent } from '../../lib/core/event.js'
import { ANONYMOUS } from '../../lib/auth/identity.js'
import { WsConnection } from '../../lib/transport/ws-connection.js'
import { WriteBatch } from '../../lib/core/write-batch.js'
import { rawSocketOf } from '../../lib/transport/internals.js'

// Write batching (lib/core/write-batch.ts, lib/transport/ws-connection.ts) over a real socket pair: a lone
// event leaves at once, a burst or a stream as one write per socket, order holds, and a
// close sends what came before it. Writes are counted where the stream hands them to the kernel.

interface Pair {
  connection: WsConnection
  client: WebSocket
  /** Writes the server's TCP socket made (a corked batch counts once). */
  writes: () => number
  /** Resolves with the next `n` frames the client receives (text), in order. */
  frames: (n: number) => Promise<string[]>
}

/** The write batching every connection of these tests shares, as an app's do. */
const batch = new WriteBatch()

async function pair (t: Test): Promise<Pair> {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false })
  await once(server, 'listening')
  t.teardown(() => new Promise<void>((resolve) => { for (const c of server.clients) c.terminate(); server.close(() => resolve()) }))
  const { port } = server.address() as { port: number }
  const client = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false })
  const [[socket]] = await Promise.all([once(server, 'connection') as Promise<[WebSocket]>, once(client, 'open')])
  socket.on('error', () => {})
  client.on('error', () => {})

  const raw = rawSocketOf(socket) as Socket
  let writes = 0
  const write = raw._write.bind(raw)
  const writev = raw._writev?.bind(raw)
  raw._write = (chunk, encoding, callback) => { writes++; write(chunk, encoding, callback) }
  if (writev !== undefined) raw._writev = (chunks, callback) => { writes++; writev(chunks, callback) }

  const received: string[] = []
  let waiter: (() => void) | undefined
  client.on('message', (data) => { received.push(String(data)); waiter?.() })
  const frames = async (n: number): Promise<string[]> => {
    const deadline = setTimeout(() => waiter?.(), 5000)
    while (received.length < n) {
      const before = received.length
      await new Promise<void>((resolve) => { waiter = resolve })
      if (received.length === before) break // the deadline
    }
    clearTimeout(deadline)
    return received.splice(0, n)
  }
  const connection = new WsConnection('c1', ANONYMOUS, socket, { sendBufferLimit: 1 << 20, writeBatch: batch })
  return { connection, client, writes: () => writes, frames }
}

let offset = 0
function event (n: number): EncodedEvent {
  const published: PublishedEvent = { channel: 'room:b', type: 'e', payload: { n }, offset: ++offset, epoch: 'x', ts: new Date(0).toISOString() }
  return new EncodedEvent(published)
}
const numbers = (frames: string[]) => frames.map((f) => (JSON.parse(f) as { payload: { n: number } }).payload.n)
const microtasksDone = () => new Promise<void>((resolve) => { queueMicrotask(resolve) })
const turnDone = () => new Promise<void>((resolve) => { setImmediate(resolve) })

t.test('a lone event is written at once, as the fan-out reaches its socket', async (t) => {
  const { connection, writes, frames } = await pair(t)
  await turnDone() // a quiet turn: nothing was written in the one before
  connection.sendEvent(event(1))
  t.equal(writes(), 1, 'written during the send')
  t.same(numbers(await frames(1)), [1])
})

t.test('a burst leaves as one write when it ends, in order', async (t) => {
  const { connection, writes, frames } = await pair(t)
  await turnDone()
  batch.inBurst(() => {
    for (let n = 1; n <= 50; n++) connection.sendEvent(event(n))
    t.equal(writes(), 0, 'nothing written while the burst is issued')
  })
  t.equal(writes(), 1, 'fifty frames, one write, as soon as the burst returns')
  t.same(numbers(await frames(50)), Array.from({ length: 50 }, (_, i) => i + 1))
})

t.test('frames after the first in a turn are corked until the end of the turn, replies in order', async (t) => {
  const { connection, writes, frames } = await pair(t)
  await turnDone()
  connection.sendEvent(event(1))
  connection.sendEvent(event(2))
  connection.send('{"type":"reply"}')
  connection.sendEvent(event(3))
  t.equal(writes(), 1, 'the first went at once')
  await microtasksDone()
  t.equal(writes(), 1, 'the rest wait for the end of the turn')
  await turnDone()
  t.equal(writes(), 2, 'then leave as one write')
  const got = await frames(4)
  t.same(got.map((f) => (JSON.parse(f) as { type: string }).type), ['e', 'e', 'reply', 'e'], 'frames and replies keep their order')
})

t.test('while traffic streams (the previous turn wrote), even first frames are corked', async (t) => {
  const { connection, writes, frames } = await pair(t)
  await turnDone()
  connection.sendEvent(event(1))
  t.equal(writes(), 1)
  await turnDone() // the end of the turn that wrote
  connection.sendEvent(event(2))
  connection.sendEvent(event(3))
  t.equal(writes(), 1, 'streaming: held to the end of this turn')
  await turnDone()
  t.equal(writes(), 2, 'both in one write')
  await turnDone() // a turn without writes ends the streaming
  connection.sendEvent(event(4))
  t.equal(writes(), 3, 'quiet again: written at once')
  t.same(numbers(await frames(4)), [1, 2, 3, 4])
})

t.test('a reply then an event in the same burst keep their order', async (t) => {
  const { connection, frames } = await pair(t)
  batch.inBurst(() => {
    connection.send('{"type":"reply"}')
    connection.sendEvent(event(7))
  })
  const got = await frames(2)
  t.same(got.map((f) => (JSON.parse(f) as { type: string }).type), ['reply', 'e'])
})

t.test('close writes what was corked before the close frame', async (t) => {
  const { connection, client, frames } = await pair(t)
  const closed = once(client, 'close') as Promise<[number, Buffer]>
  batch.inBurst(() => {
    connection.sendEvent(event(8))
    connection.sendEvent(event(9))
    connection.close(4000, 'bye')
  })
  t.same(numbers(await frames(2)), [8, 9], 'the events arrived')
  const [code] = await closed
  t.equal(code, 4000, 'then the close')
})
