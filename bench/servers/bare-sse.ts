import { once } from 'node:events'
import { createServer, type ServerResponse } from 'node:http'
import { SSE_HEADERS } from '../../lib/transport/sse-connection.js'
import { type BenchMessage, serveControl } from './control.js'
import { sseEventOf } from './sse-event.js'

/**
 * The bare Node SSE baselines (node:http, no framework). `naive`: one `res.write(string)`
 * per stream and event, as a hand-written SSE endpoint does. `corked`: every socket corked
 * around the whole broadcast loop and one pre-built Buffer for every stream: one write per
 * socket per loop, the physical limit of Node here. Both send the gateway's bytes per
 * event (./sse-event.ts).
 */
const mode = process.argv[2] === 'corked' ? 'corked' : 'naive'
const streams = new Set<ServerResponse>()

const server = createServer((req, res) => {
  if (!(req.url ?? '').startsWith('/sse')) {
    res.writeHead(404).end()
    return
  }
  res.writeHead(200, SSE_HEADERS)
  res.flushHeaders()
  streams.add(res)
  res.once('close', () => { streams.delete(res) })
  res.on('error', () => { /* a client vanished; close follows */ })
})
server.keepAliveTimeout = 0
server.headersTimeout = 0
server.requestTimeout = 0
server.listen(0, '127.0.0.1')
await once(server, 'listening')

function broadcastNaive (messages: BenchMessage[]): void {
  for (const m of messages) {
    const text = sseEventOf(m)
    for (const res of streams) res.write(text)
  }
}

function broadcastCorked (messages: BenchMessage[]): void {
  const buffers = messages.map((m) => Buffer.from(sseEventOf(m)))
  for (const res of streams) res.socket?.cork()
  for (const buffer of buffers) for (const res of streams) res.write(buffer)
  for (const res of streams) res.socket?.uncork()
}

const address = server.address()
serveControl({
  broadcast: mode === 'corked' ? broadcastCorked : broadcastNaive,
  connections: () => streams.size
}, typeof address === 'object' && address !== null ? address.port : 0)
