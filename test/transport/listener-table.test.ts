import { EventEmitter } from 'node:events'
import t from 'tap'
import { WebSocket, WebSocketServer } from 'ws'
import { compactListeners } from '../../lib/transport/internals.js'

/** An emitter whose listeners were compacted: it must behave exactly as before. */
function compacted (): { emitter: EventEmitter, calls: string[] } {
  const emitter = new EventEmitter()
  const calls: string[] = []
  emitter.on('error', (err: Error) => calls.push(`error:${err.message}`))
  emitter.on('message', (text: string) => calls.push(`message:${text}`))
  emitter.on('pong', () => calls.push('pong'))
  emitter.on('close', () => calls.push('close'))
  compactListeners(emitter)
  return { emitter, calls }
}

t.test('listeners still fire, in order, with their arguments', async (t) => {
  const { emitter, calls } = compacted()
  t.not(Object.getPrototypeOf((emitter as unknown as { _events: object })._events), null, 'the table was replaced')
  emitter.emit('message', 'a')
  emitter.emit('pong')
  emitter.emit('error', new Error('boom'))
  emitter.emit('close')
  t.same(calls, ['message:a', 'pong', 'error:boom', 'close'])
  t.same(emitter.eventNames(), ['error', 'message', 'pong', 'close'])
  t.equal(emitter.listenerCount('message'), 1)
})

t.test('listeners added, removed and once after compaction behave as on any emitter', async (t) => {
  const { emitter, calls } = compacted()
  const extra = (): void => { calls.push('close:extra') }
  emitter.on('close', extra)
  emitter.once('drain', () => calls.push('drain'))
  emitter.emit('drain')
  emitter.emit('drain')
  emitter.emit('close')
  emitter.removeListener('close', extra)
  emitter.emit('close')
  emitter.removeAllListeners('pong')
  t.equal(emitter.emit('pong'), false, 'no pong listener left')
  t.same(calls, ['drain', 'close', 'close:extra', 'close'])
  emitter.removeAllListeners()
  t.same(emitter.eventNames(), [])
})

t.test('inherited names find nothing; an unhandled error still throws', async (t) => {
  const { emitter } = compacted()
  t.equal(emitter.emit('toString'), false)
  t.equal(emitter.emit('constructor'), false)
  t.equal(emitter.emit('__proto__'), false)
  const bare = new EventEmitter()
  bare.on('close', () => {})
  compactListeners(bare)
  t.throws(() => bare.emit('error', new Error('unhandled')), /unhandled/)
})

t.test('compacting twice, or an emitter without listeners, changes nothing', async (t) => {
  const { emitter, calls } = compacted()
  const table = (emitter as unknown as { _events: object })._events
  compactListeners(emitter)
  t.equal((emitter as unknown as { _events: object })._events, table)
  emitter.emit('pong')
  t.same(calls, ['pong'])
  const empty = new EventEmitter()
  compactListeners(empty)
  t.equal(empty.emit('anything'), false)
})

t.test('a real ws socket with compacted listeners still talks, pongs and closes', async (t) => {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  t.teardown(() => { server.close() })
  const events: string[] = []
  server.on('connection', (socket) => {
    socket.on('error', () => events.push('error'))
    socket.on('message', (data) => { events.push(`message:${String(data)}`); socket.send(`echo:${String(data)}`) })
    socket.on('pong', () => { events.push('pong'); socket.close(4000, 'done') })
    socket.on('close', () => events.push('close'))
    compactListeners(socket)
  })
  await new Promise((resolve) => server.once('listening', resolve))
  const { port } = server.address() as { port: number }
  const client = new WebSocket(`ws://127.0.0.1:${port}`)
  const echo = await new Promise<string>((resolve) => {
    client.on('open', () => client.send('hi'))
    client.once('message', (data) => resolve(String(data)))
  })
  t.equal(echo, 'echo:hi')
  for (const socket of server.clients) socket.ping()
  const code = await new Promise<number>((resolve) => client.on('close', resolve))
  t.equal(code, 4000)
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.same(events, ['message:hi', 'pong', 'close'])
})
