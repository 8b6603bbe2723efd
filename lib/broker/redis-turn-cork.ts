import type { Redis } from 'ioredis'

/**
 * Holds a Redis connection's writes back to the end of the current turn of the event loop
 * (setImmediate), so the commands a turn sends leave in one socket write, each still
 * answered on its own the moment its reply is read.
 *
 * Why: every HTTP publish is one FCALL, and its socket write to Redis was a quarter of the
 * gateway's time in a profile of HTTP publishing; with 16 requests in flight a turn handles
 * about four of them (bench/README.md, "Session 17"). A pipeline (ioredis's, or its
 * auto-pipelining) answers every command of it only once the last reply is in: a publish's
 * own pub/sub copy then arrives before its reply and has to be decoded, where a reply read
 * first lets the copy be dropped undecoded (RedisBroker.onMessage). In a Kafka drain that
 * cost a third more CPU per message. With the socket corked instead, each reply is read and
 * answered as it arrives.
 *
 * Redis runs the commands in the order they were sent, as it would have one by one. What a
 * hold costs is latency of at most one turn for whatever the connection sends meanwhile.
 */
export class TurnCork {
  private holding = false

  constructor (private readonly client: Redis) {}

  /** Holds what the connection writes from now to the end of this turn. */
  holdToEndOfTurn (): void {
    if (this.holding) return
    const socket = this.client.stream
    // Not connected: ioredis refuses the command without writing (no offline queue).
    if (socket === undefined || this.client.status !== 'ready') return
    this.holding = true
    socket.cork()
    setImmediate(() => {
      this.holding = false
      socket.uncork()
    })
  }

  /** Runs `send` (which sends commands synchronously) with its writes leaving as one. */
  together<T> (send: () => T): T {
    const socket = this.client.stream
    socket?.cork()
    try {
      return send()
    } finally {
      socket?.uncork()
    }
  }
}
