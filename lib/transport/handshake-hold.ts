import type { Socket } from 'node:net'

/**
 * The `101 Switching Protocols` and the `system:connected` greeting leave in one write.
 *
 * `ws` writes the 101 the moment the upgrade completes; the greeting follows once the
 * connection's own channels are subscribed (a microtask later on the memory broker, a
 * Redis round trip later when the user channel is new to the instance). Written apart,
 * that is two write syscalls on the server and two wake-ups of the client per connect;
 * in a reconnect storm every client pays it at once (bench/README.md, "Reconnect storm").
 * A client can do nothing with an open socket before the greeting anyway: the frames it
 * sends are held until then (WsSession.holdFramesUntil).
 *
 * So the TCP socket is corked once the upgrade is authenticated (an onRequest hook: a
 * refusal before it goes out as before) and uncorked when the greeting has been sent or
 * the connection refused. A hold is never left to the broker: after `maxMs` it lets go by
 * itself, so a greeting that never comes cannot keep the 101 back. `end()` flushes a
 * corked socket, so an upgrade `ws` aborts still answers.
 *
 * The holds live in a WeakMap, not on the socket: a property on every TCP socket would
 * change its shape for the life of the connection, for a moment of the handshake.
 */
const holds = new WeakMap<Socket, NodeJS.Timeout>()

/**
 * How long a handshake may be held at most: a Redis round trip is well under a millisecond,
 * so this only bounds what an overloaded or stalled instance adds to a client's wait for its
 * 101 (a client's handshake timeout counts until then).
 */
export const HANDSHAKE_HOLD_MS = 250

/** Corks `socket` until releaseHandshake, or `maxMs`. Holding a socket already held does nothing. */
export function holdHandshake (socket: Socket, maxMs = HANDSHAKE_HOLD_MS): void {
  if (holds.has(socket) || socket.destroyed) return
  socket.cork()
  const timer = setTimeout(releaseHandshake, maxMs, socket)
  timer.unref()
  holds.set(socket, timer)
}

/** Lets what a hold kept back go (once: a second call, or one for a socket not held, does nothing). */
export function releaseHandshake (socket: Socket): void {
  const timer = holds.get(socket)
  if (timer === undefined) return
  holds.delete(socket)
  clearTimeout(timer)
  socket.uncork()
}

/** Whether `socket` is held (for tests). */
export const isHandshakeHeld = (socket: Socket): boolean => holds.has(socket)
