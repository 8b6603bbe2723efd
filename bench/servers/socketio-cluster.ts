import { once } from 'node:events'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { Redis } from 'ioredis'
import { Server } from 'socket.io'
import { createAdapter as createRedisAdapter } from '@socket.io/redis-adapter'
import { createAdapter as createStreamsAdapter } from '@socket.io/redis-streams-adapter'
import { BENCH_CHANNEL, type BenchMessage, frameOf, serveControl } from './control.js'

/**
 * One of the cross-instance case's Socket.IO servers (issue 18): Socket.IO 4, WebSocket
 * transport only, on a Redis adapter, as a team would deploy it behind a load balancer:
 *   BENCH_SIO_ADAPTER=redis    @socket.io/redis-adapter (Redis pub/sub; key BENCH_REDIS_KEY_PREFIX)
 *   BENCH_SIO_ADAPTER=streams  @socket.io/redis-streams-adapter (one Redis stream, XADD/XREAD)
 * Every client joins the room `room:bench` when it connects (the gateway's clients
 * subscribe to that channel). A broadcast is `io.to(room).emit(type, frame)`: the adapter
 * writes it to the local clients and publishes it to Redis, from where every other
 * instance writes it to its own.
 *
 * The gateway's two ways in, imitated: the `burst`/`steady` control ops (the broker API's
 * equivalent: the server's own `io.to().emit`), and `POST /realtime/publish` with the
 * gateway's body (`{ channel, type, payload }`), answered 202 once emitted. Its bearer
 * token is only required to be present, not verified: the gateway verifies a JWT per
 * request, so this favours Socket.IO a little.
 */
const url = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379'
const prefix = process.env.BENCH_REDIS_KEY_PREFIX ?? 'rtg-bench-sio:'
const kind = process.env.BENCH_SIO_ADAPTER === 'streams' ? 'streams' : 'redis'

const pub = new Redis(url)
const redisAdapter = () => {
  const sub = pub.duplicate()
  return createRedisAdapter(pub, sub, { key: `${prefix}socket.io` })
}
const streamsAdapter = () => createStreamsAdapter(pub, { streamName: `${prefix}socket.io`, channelPrefix: `${prefix}socket.io` })

const httpServer = createServer(publishRoute)
const io = new Server(httpServer, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  adapter: kind === 'streams' ? streamsAdapter() : redisAdapter()
})
io.on('connection', (socket) => { void socket.join(BENCH_CHANNEL) })
httpServer.listen(0, '127.0.0.1')
await once(httpServer, 'listening')

let offset = 0
function emit (channel: string, type: string, payload: unknown): void {
  io.to(channel).emit(type, { channel, offset: ++offset, payload, ts: new Date().toISOString() })
}

function broadcast (messages: BenchMessage[]): void {
  for (const m of messages) {
    const { type, ...rest } = frameOf(m)
    io.to(BENCH_CHANNEL).emit(type, rest)
  }
}

/** The gateway's POST /realtime/publish, single event, 202 once handed to the adapter. */
function publishRoute (req: IncomingMessage, res: ServerResponse): void {
  // Engine.IO answers its own paths before this listener sees them.
  if (req.method !== 'POST' || req.url !== '/realtime/publish') {
    res.writeHead(404).end()
    return
  }
  if (req.headers.authorization === undefined) {
    res.writeHead(401).end()
    return
  }
  const chunks: Buffer[] = []
  req.on('data', (chunk: Buffer) => chunks.push(chunk))
  req.on('end', () => {
    let body: { channel?: unknown, type?: unknown, payload?: unknown }
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof body
    } catch {
      res.writeHead(400).end()
      return
    }
    if (typeof body.channel !== 'string' || typeof body.type !== 'string') {
      res.writeHead(400).end()
      return
    }
    emit(body.channel, body.type, body.payload)
    res.writeHead(202, { 'content-type': 'application/json' }).end(`{"offset":${offset}}`)
  })
}

const address = httpServer.address()
serveControl({
  broadcast,
  connections: () => io.engine.clientsCount
}, typeof address === 'object' && address !== null ? address.port : 0)
