import { once } from 'node:events'
import type { Socket } from 'node:net'
import { WebSocketServer, type WebSocket } from 'ws'
import { type BenchMessage, frameOf, serveControl } from './control.js'

/**
 * The bare `ws` baselines. `naive`: one `ws.send(string)` per client and message, as most
 * servers do (ws encodes the string for every send). `corked`: every socket corked around
 * the whole broadcast loop and one pre-encoded Buffer for all: one write per socket per
 * loop, the physical limit of Node here.
 */
const mode = process.argv[2] === 'corked' ? 'corked' : 'naive'

const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false })
wss.on('connection', (ws) => { ws.on('error', () => { /* a client vanished; ws closes it */ }) })
await once(wss, 'listening')

const rawSocket = (ws: WebSocket): Socket => (ws as unknown as { _socket: Socket })._socket

function broadcastNaive (messages: BenchMessage[]): void {
  for (const m of messages) {
    const text = JSON.stringify(frameOf(m))
    for (const ws of wss.clients) ws.send(text)
  }
}

function broadcastCorked (messages: BenchMessage[]): void {
  const buffers = messages.map((m) => Buffer.from(JSON.stringify(frameOf(m))))
  for (const ws of wss.clients) rawSocket(ws).cork()
  for (const buffer of buffers) for (const ws of wss.clients) ws.send(buffer, { binary: false })
  for (const ws of wss.clients) rawSocket(ws).uncork()
}

const address = wss.address()
serveControl({
  broadcast: mode === 'corked' ? broadcastCorked : broadcastNaive,
  connections: () => wss.clients.size
}, typeof address === 'object' && address !== null ? address.port : 0)
