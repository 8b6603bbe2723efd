import { once } from 'node:events'
import { createServer } from 'node:http'
import { Server } from 'socket.io'
import { type BenchMessage, frameOf, serveControl } from './control.js'

/**
 * Socket.IO 4, WebSocket transport only, broadcasting with `io.emit` (it encodes the
 * packet once per broadcast and writes it to every client).
 */
const httpServer = createServer()
const io = new Server(httpServer, { transports: ['websocket'], serveClient: false, perMessageDeflate: false })
httpServer.listen(0, '127.0.0.1')
await once(httpServer, 'listening')

function broadcast (messages: BenchMessage[]): void {
  for (const m of messages) {
    const { type, ...rest } = frameOf(m)
    io.emit(type, rest)
  }
}

const address = httpServer.address()
serveControl({
  broadcast,
  connections: () => io.engine.clientsCount
}, typeof address === 'object' && address !== null ? address.port : 0)
