import type { EventEmitter } from 'node:events'
import type { ServerResponse } from 'node:http'
import { createRequire } from 'node:module'
import type { Socket } from 'node:net'
import type { WebSocket } from 'ws'

/**
 * Every reach into `ws` or Node internals (an underscore property neither documents) is
 * here and nowhere else. Each one buys memory or speed measured in bench/README.md, and
 * each degrades to the public API when the property is not what it was: the gateway
 * keeps working, it only costs what the reach saved. test/transport/internals.test.ts
 * holds a canary per reach against the real `ws` and Node objects, so an upgrade that
 * moves one fails CI instead of silently costing memory or throughput.
 *
 * | reach | buys (bench/README.md) | without it |
 * | --- | --- | --- |
 * | `ws._socket` (the TCP socket under a WebSocket) | event frames prebuilt once and written as is, sockets corked per turn or burst ("Before and after the performance work", "Write batching": burst fan-out about 1.0–1.3M msgs/s at 5k against 95–120k for `ws.send` per frame) | `rawSocketOf` returns undefined: frames go through `socket.send` (framed per send, one write each) |
 * | `ws._receiver._buffers` (ws's read chunk list) | 152 B per client that ever sent a frame or pong, for its life ("Idle heap per connection": 37.1 → 35.7 MB per 10k idle) | nothing is released; the array stays grown |
 * | `EventEmitter._events` (the listener table) | 256 B → 56 B per WebSocket ("Idle heap per connection", "The last two targets": 31.8 → 28.8 MB per 10k idle at 10k) | the null-prototype hash table stays |
 * | Fastify's `onResFinished` listeners on a hijacked SSE response | Fastify's request and reply, the request's child logger, query and headers no longer live as long as the stream (bench/README.md, SSE) | they stay reachable until the stream ends |
 * | `net.Socket._httpMessage` (the upgrade's ServerResponse) | the upgrade's request, response, headers (token included) and logger no longer live as long as the socket: several kB per idle connection ("Before and after the performance work", idle memory) | they stay reachable until the socket closes |
 * | Node's HTTP server state on an SSE stream's socket (`socket.parser`, `parser.incoming`, `socket._paused`, the listeners `_http_server.js` binds, `_http_common.freeParser`) | the request parser (its C++ side too, beyond the 1000 Node pools) and its closures, freed as an upgrade frees them: RSS per idle stream 7.9 → about 4.5 kB ("Session 32") | the stream keeps them until it ends |
 */

/** What `ws` keeps on a WebSocket beside its public API. */
interface WsInternals {
  _socket?: unknown
  _receiver?: { _buffers?: unknown }
}

/**
 * The TCP socket under a WebSocket (`ws` keeps it as `_socket`), or undefined when it is
 * not there (another `ws`, a socket that never opened): callers then use `socket.send`.
 */
export function rawSocketOf (socket: WebSocket): Socket | undefined {
  const raw = (socket as unknown as WsInternals)._socket
  return typeof raw === 'object' && raw !== null && typeof (raw as Socket).cork === 'function' ? raw as Socket : undefined
}

/**
 * Lets go of the read buffer list `ws` grew for the frames read so far, if it is empty.
 * `ws` pushes each chunk it reads onto an array and shifts it off again: V8 keeps the
 * grown backing store (17 slots, 152 B) for the socket's life, so every client that
 * ever sent a frame or a pong would carry it while idle. Call it after a frame or pong
 * has been read (`ws` reads `_buffers` afresh each time; nothing holds the old array).
 * Returns whether it replaced the array.
 */
export function releaseReadBuffers (socket: WebSocket): boolean {
  const receiver = (socket as unknown as WsInternals)._receiver
  const buffers = receiver?._buffers
  if (!Array.isArray(buffers) || buffers.length !== 0) return false
  ;(receiver as { _buffers: unknown[] })._buffers = []
  return true
}

/**
 * Node's EventEmitter keeps its listeners in `_events`, an object created as
 * `{ __proto__: null }`, which V8 keeps in dictionary mode: a 256 B hash table once
 * four event names are in it (a socket's `error`, `message`, `pong`, `close`). Over
 * thousands of idle WebSockets that table was the largest thing the gateway kept per
 * connection beyond what bare `ws` keeps.
 *
 * A table made by this constructor has the same semantics (no inherited keys, so an
 * event named `toString` or `constructor` finds nothing) but V8 gives it fast, in-object
 * properties and one hidden class shared by every socket whose listeners were added in
 * the same order: 56 B. EventEmitter reads and writes `_events` as a plain object,
 * so listeners added, removed or emitted later behave as before (test/transport/listener-table.test.ts).
 */
const ListenerTable = function ListenerTable () {} as unknown as new () => Record<string | symbol, unknown>
ListenerTable.prototype = Object.create(null)

type WithListeners = EventEmitter & { _events?: Record<string | symbol, unknown> }

/**
 * Moves an emitter's listeners into a compact table. Call it once the listeners that
 * last the emitter's life are added. Leaves an emitter whose `_events` is not the
 * null-prototype object it knows (another Node version, say, or a table already
 * compacted) as it is. Returns whether it compacted.
 */
export function compactListeners (emitter: EventEmitter): boolean {
  const target = emitter as WithListeners
  const current = target._events
  if (typeof current !== 'object' || current === null || Object.getPrototypeOf(current) !== null) return false
  const table = new ListenerTable()
  for (const name of Reflect.ownKeys(current)) table[name] = current[name]
  target._events = table
  return true
}

/**
 * Detaches the ServerResponse an HTTP upgrade leaves on its socket (@fastify/websocket
 * routes the upgrade through a ServerResponse it assigns to the socket, and Node keeps
 * it as `_httpMessage` until a response ends, which an upgrade's never does). Through it
 * the request, its headers (token included) and its logger would live as long as the
 * WebSocket. Returns whether there was one to detach.
 */
export function detachUpgradeResponse (raw: Socket): boolean {
  const response = (raw as Socket & { _httpMessage?: ServerResponse | null })._httpMessage
  if (typeof response?.detachSocket !== 'function') return false
  response.detachSocket(raw)
  return true
}

/**
 * Removes the `finish` and `error` listeners Fastify adds to every response with a logger
 * (reply.js `setupResponseListeners`: a closure named `onResFinished` over the reply, so over
 * the request, its child logger, query and params). For a hijacked SSE response, which lasts
 * as long as the stream, they kept all of that alive for nothing Fastify would do with it but
 * the request-completed log line (LOG_LEVEL debug) when the stream ends. Node's own
 * listeners stay. Returns how many it removed.
 */
export function releaseHijackedReply (res: ServerResponse): number {
  let removed = 0
  for (const event of ['finish', 'error'] as const) {
    for (const listener of res.listeners(event)) {
      if (listener.name !== 'onResFinished') continue
      res.removeListener(event, listener as (...args: unknown[]) => void)
      removed++
    }
  }
  return removed
}

/** Node's `_http_common` module, whose `freeParser` is how the HTTP server itself lets a parser go. */
const httpCommon = createRequire(import.meta.url)('_http_common') as { freeParser?: unknown }

/**
 * The listeners Node's HTTP server binds to each socket it serves (`_http_server.js`,
 * `connectionListenerInternal`), by the names the bound functions carry: an upgrade
 * removes exactly these before handing its socket over.
 */
const SERVER_LISTENERS = [['data', 'bound socketOnData'], ['end', 'bound socketOnEnd'], ['close', 'bound socketOnClose'], ['drain', 'bound socketOnDrain']] as const
/** And the two it adds while its parser reads the socket itself (shared functions). */
const CONSUMING_LISTENERS = [['pause', 'onSocketPause'], ['resume', 'onSocketResume']] as const

interface ServedSocket {
  parser?: { finish?: unknown, incoming?: unknown } | null
  /** Node's HTTP server paused the socket (back-pressure from an earlier response): its resume listeners are needed. */
  _paused?: boolean
}

/** The client ended its side: so does the server (what Node's own `socketOnEnd` does, half-open not allowed). */
function endWithClient (this: Socket): void {
  this.end()
}

/**
 * Takes a socket whose response streams for as long as it lives (SSE, its head sent) away
 * from Node's HTTP server, as an upgrade takes its socket: the request parser is freed (its
 * C++ side holds a few kB), with the four closures the server bound to the socket. No
 * second request is ever read from it: the response must say `Connection: close` (its end
 * then ends the socket, and no client or proxy pool sends another request down it).
 * Bytes the client sends are read and dropped. `close` still reaches the response (Node's
 * `onServerResponseClose`), and a client's end ends the socket, as before. Returns false,
 * changing nothing, when the socket is not as Node 20–24 leave it: the stream then keeps
 * the server's state, as it did. Call it in a turn after the request was read, not from
 * within the server's 'request' event: Node 20 puts a parser freed during its own read back
 * in the server's connection list, where `server.close()` fails on its missing socket.
 *
 * Also left as it is: a socket from which a later request was read already (pipelined in
 * the same packet: its response waits in the server's queue, and only the server's
 * `socketOnClose` ends it when the client goes; review, session 32), a request not read
 * whole (the server's request timeout still applies), and a socket the server paused.
 * Its socket is then no longer in the server's connection list: `closeIdleConnections()`
 * and `closeAllConnections()` do not reach it, so the owner ends it itself on shutdown.
 * Freed parsers go back to Node's pool of 1000: the C++ side is saved beyond those.
 */
export function releaseHttpConnection (socket: Socket, res: ServerResponse): boolean {
  const freeParser = httpCommon.freeParser
  const served = socket as Socket & ServedSocket
  const parser = served.parser
  if (typeof freeParser !== 'function' || typeof parser?.finish !== 'function') return false
  if (parser.incoming !== res.req || res.req?.complete !== true || served._paused === true) return false
  const bound = SERVER_LISTENERS.map(([event, name]) => [event, socket.listeners(event).find((l) => l.name === name)] as const)
  if (bound.some(([, listener]) => listener === undefined)) return false
  for (const [event, listener] of bound) socket.removeListener(event, listener as (...args: unknown[]) => void)
  for (const [event, name] of CONSUMING_LISTENERS) {
    for (const listener of socket.listeners(event)) if (listener.name === name) socket.removeListener(event, listener as (...args: unknown[]) => void)
  }
  // As the server does for an upgrade: the parser told the message is over, then freed
  // (its own read of the socket undone, out of the server's connection list, back to the pool).
  ;(parser.finish as () => unknown).call(parser)
  ;(freeParser as (parser: unknown, req: unknown, socket: unknown) => void)(parser, null, socket)
  // With no parser left, this also puts back the socket's own `on` (the server wrapped it).
  socket.on('end', endWithClient)
  return true
}
