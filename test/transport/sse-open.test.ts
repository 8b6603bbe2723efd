import { createServer } from 'node:http'
import { once } from 'node:events'
import t from 'tap'
import { SseConnection } from '../../lib/transport/sse-connection.js'
import { ANONYMOUS } from '../../lib/auth/identity.js'
import { WriteBatch } from '../../lib/core/write-batch.js'
import { EncodedPresence } from '../../lib/core/presence.js'

// A presence push or a reset can reach a stream while its subscription is still being read,
// before the route has written the head: it must wait, and come after system:connected.
t.test('writes before open wait for the head and come after system:connected', async (t) => {
  const server = createServer((req, res) => {
    const connection = new SseConnection('c1', ANONYMOUS, res, { sendBufferLimit: 1 << 20, writeBatch: new WriteBatch() })
    connection.sendPresence(new EncodedPresence('product:1', { connections: 2, users: 1 }))
    connection.sendReset('product:1', { offset: 0, epoch: 'e2' })
    t.equal(res.headersSent, false, 'nothing was written before the head')
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    connection.open({ connectionId: 'c1' })
    connection.close(1000, 'done')
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const { port } = server.address() as { port: number }
  const res = await fetch(`http://127.0.0.1:${port}/`)
  t.equal(res.headers.get('content-type'), 'text/event-stream', 'the route\'s head, not an implicit one')
  const events = (await res.text()).split('\n\n').filter((block) => block !== '').map((block) => /event: (.*)/.exec(block)?.[1])
  t.same(events, ['system:connected', 'presence', 'system:reset'])
})

// A resume that lost something says so right after system:connected (docs/protocol.md,
// Server-Sent Events), before a presence count pushed while the subscription was read.
t.test('the system event given to open comes right after system:connected, before what waited', async (t) => {
  const server = createServer((req, res) => {
    const connection = new SseConnection('c2', ANONYMOUS, res, { sendBufferLimit: 1 << 20, writeBatch: new WriteBatch() })
    connection.sendPresence(new EncodedPresence('product:1', { connections: 2, users: 1 }))
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    connection.open({ connectionId: 'c2' }, { event: 'system:recovery', data: { recovered: false } })
    connection.close(1000, 'done')
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const { port } = server.address() as { port: number }
  const blocks = (await (await fetch(`http://127.0.0.1:${port}/`)).text()).split('\n\n').filter((block) => block !== '')
  t.same(blocks.map((block) => /event: (.*)/.exec(block)?.[1]), ['system:connected', 'system:recovery', 'presence'])
  t.match(blocks[1], /^event: system:recovery\ndata: \{"recovered":false\}$/, 'no id: the cursor does not move')
})
