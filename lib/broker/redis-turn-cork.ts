import type { Socket } from 'node:net'
import type { Redis } from 'ioredis'

/**
 * Holds Redis connections' writes back to the end of the current turn of the event loop
 * (setImmediate), so the commands a turn sends on a connection leave in one socket write,
 * each still answered on its own the moment its reply is read.
 *
 * Why: every HTTP publish is one FCALL, and its socket write to Redis was a quarter of the
 * gateway's time in a profile of HTTP publishing; with 16 requests in flight a turn handles
 * about four of them (bench/README.md, "Session 17"). On a Redis Cluster a fresh channel
 * subscribed and left is an SSUBSCRIBE, a history read, a presence read and an SUNSUBSCRIBE,
 * each a write of its own to its node until they were held too (bench/README.md, "Session
 * 30"). A pipeline (ioredis's, or its auto-pipelining) answers every command of it only once
 * the last reply is in: a publish's own pub/sub copy then arrives before its reply and has to
 * be decoded, where a reply read first lets the copy be dropped undecoded
 * (RedisBroker.onMessage). In a Kafka drain that cost a third more CPU per message. With the
 * socket corked instead, each reply is read and answered as it arrives.
 *
 * Redis runs a connection's commands in the order they were sent, as it would have one by
 * one. What a hold costs is latency of at most one turn for whatever the connection sends
 * meanwhile.
 */
export class TurnCork {
  /** Sockets corked until the end of this turn. */
  private held: Socket[] = []
  /** True while `commands` is held this turn (so a turn's later calls cost one check). */
  private commandsHeld = false
  private readonly release = (): void => {
    const held = this.held
    this.held = []
    this.commandsHeld = false
    for (const socket of held) socket.uncork()
  }

  /** @param commands the connections commands go out on: one Redis, or a cluster's masters. */
  constructor (private readonly commands: () => Iterable<Redis>) {}

  /** Holds what `connection` writes from now to the end of this turn. */
  hold (connection: Redis): void {
    const socket = connection.stream
    // Not connected: ioredis refuses the command without writing (no offline queue).
    if (socket === undefined || connection.status !== 'ready' || this.held.includes(socket)) return
    socket.cork()
    if (this.held.push(socket) === 1 && !this.commandsHeld) setImmediate(this.release)
  }

  /** Holds what the command connections write from now to the end of this turn. */
  holdCommands (): void {
    if (this.commandsHeld) return
    // The release first: whatever happens below, nothing stays corked past this turn.
    if (this.held.length === 0) setImmediate(this.release)
    this.commandsHeld = true
    for (const connection of this.commands()) this.hold(connection)
  }

  /** Runs `send` (which sends commands synchronously) with its writes on the command connections leaving as one per connection. */
  together<T> (send: () => T): T {
    const sockets: Socket[] = []
    for (const connection of this.commands()) {
      if (connection.stream === undefined) continue
      connection.stream.cork()
      sockets.push(connection.stream)
    }
    try {
      return send()
    } finally {
      for (const socket of sockets) socket.uncork()
    }
  }
}
