import { test } from 'tap'
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { WebSocketServer, type WebSocket as ServerSocket } from 'ws'
import { watch } from '../support/client-watch.js'

/**
 * The client's own check that a channel's offsets follow each other (client/subscriptions.ts,
 * takeGaps). The gateway never skips an offset unannounced, so no real gateway can show
 * what the client does with one: a scripted server plays the gateway's frames, with a gap.
 */

const greeting = { connectionId: 'scripted', userId: 'g', roles: [], channels: ['user:g'], heartbeatMs: 25000 }
const event = (offset: number) => ({ type: 'tick', channel: 'product:g', offset, payload: { n: offset }, ts: new Date().toISOString() })

/** What the app saw, in the order it saw it: events by offset, a recovery as its channels and gap. */
function record (w: ReturnType<typeof watch>): string[] {
  const seen: string[] = []
  w.client.on('tick', (e) => seen.push(`event ${e.offset as number}`))
  w.client.on('recovery', (r) => seen.push(`recovery ${r.channels.join(',')} ${JSON.stringify(r.gap)}`))
  return seen
}

test('WebSocket: events that skip offsets with nothing said are a recovery of that channel before the next event', async (t) => {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  t.teardown(() => new Promise<void>((resolve) => wss.close(() => resolve())))
  await new Promise((resolve) => wss.once('listening', resolve))
  wss.on('connection', (socket: ServerSocket) => {
    socket.send(JSON.stringify({ type: 'system:connected', payload: greeting }))
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data))
      if (frame.type !== 'subscribe' || !frame.payload.channels.includes('product:g')) return
      socket.send(JSON.stringify({ type: 'subscribed', id: frame.id, payload: { channels: frame.payload.channels, positions: { 'product:g': { offset: 2, epoch: 'e' } } } }))
      for (const offset of [3, 4, 7, 8]) socket.send(JSON.stringify(event(offset)))
    })
  })
  const { port } = wss.address() as AddressInfo
  const w = watch(t, { url: `http://127.0.0.1:${port}`, token: 'x', channels: ['product:g'], transports: ['ws'] })
  const seen = record(w)
  await w.until('the events', () => w.on('product:g').length === 4)
  t.same(w.on('product:g').map((e) => e.offset), [3, 4, 7, 8])
  t.same(seen, ['event 3', 'event 4', 'recovery product:g {"after":4,"next":7}', 'event 7', 'event 8'])
  t.match(w.recoveries, [{ recovered: false, channels: ['product:g'] }])
  t.same(w.client.lastPositions()['product:g'], { offset: 8, epoch: 'e' }, 'the position follows the stream')
})

test('SSE: a skip is weighed before the event\'s cursor moves the position', async (t) => {
  const server = createServer((_req, res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    const cursor = (offset: number) => `v1;user:g,e,0;product:g,e,${offset}`
    res.write(`id: ${cursor(2)}\nevent: system:connected\ndata: ${JSON.stringify(greeting)}\n\n`)
    for (const offset of [3, 6, 7]) {
      const { type, ...data } = event(offset)
      res.write(`id: ${cursor(offset)}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`)
    }
  })
  t.teardown(() => { server.closeAllConnections(); server.close() })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const w = watch(t, { url: `http://127.0.0.1:${port}`, token: 'x', channels: ['product:g'], transports: ['sse'] })
  const seen = record(w)
  await w.until('the events', () => w.on('product:g').length === 3)
  t.same(seen, ['event 3', 'recovery product:g {"after":3,"next":6}', 'event 6', 'event 7'])
  t.same(w.client.lastPositions()['product:g'], { offset: 7, epoch: 'e' })
})
