/**
 * When a socket's frames leave: at once, or batched into one write per socket.
 *
 * On a fan-out the cost is the write syscalls (about 10 µs each over loopback here, 50 ms
 * for one event to 5k sockets: bench/README.md, "Write batching"), so two cases pull apart:
 * - a lone event must leave at once: each socket's write should start as the fan-out
 *   loop reaches it, not after the loop or at the end of the turn;
 * - a burst (a batch publish, a busy stream) must leave as one write per socket, not one
 *   per frame.
 * The rule: a socket's first frame in a turn of the event loop is written at once, unless
 * the frames are part of a burst (`inBurst`) or the previous turn also wrote (traffic is
 * streaming): then, and for every further frame in the turn, the socket is corked, and
 * uncorked at the end of the burst or of the turn. So a socket costs at most two writes per
 * turn, and one while streaming or in a burst.
 *
 * No Fastify, no sockets here: a transport connection implements `Flushable` and asks.
 */
export interface Flushable {
  /** Writes out what is corked and forgets this turn's writes. */
  flush(): void
}

/**
 * One app's batching state (the connections written to this turn, whether a burst or a
 * stream is on). Each app makes its own (lib/hub/hub.ts), so two apps in one process
 * never flush, cork or time each other's sockets.
 */
export class WriteBatch {
  /** The connections written to in this turn (each once). */
  private readonly batched: Flushable[] = []
  private endOfTurnScheduled = false
  private wroteThisTurn = false
  /** The previous turn wrote: traffic is streaming, so even first frames are corked. */
  private streaming = false
  private burstDepth = 0

  /** Whether even a socket's first frame of the turn should be corked. */
  batchesFirstFrame (): boolean {
    return this.streaming || this.burstDepth > 0
  }

  /** Registers a connection written to in this turn: flushed at the end of the burst or turn. */
  join (connection: Flushable): void {
    this.batched.push(connection)
    this.wroteThisTurn = true
    if (!this.endOfTurnScheduled) {
      this.endOfTurnScheduled = true
      setImmediate(this.endTurn)
    }
  }

  /**
   * Runs `publish` as one burst: every frame it sends (synchronously, as the memory broker
   * delivers) is corked, and all of it leaves, one write per socket, when it returns.
   */
  inBurst<T> (publish: () => T): T {
    this.burstDepth++
    try {
      return publish()
    } finally {
      if (--this.burstDepth === 0) this.flushAll()
    }
  }

  private flushAll (): void {
    for (const connection of this.batched) connection.flush()
    this.batched.length = 0
  }

  /** Runs at the end of every turn that wrote, and of the turn after (which ends streaming). */
  private readonly endTurn = (): void => {
    this.streaming = this.wroteThisTurn
    this.wroteThisTurn = false
    this.flushAll()
    if (this.streaming) setImmediate(this.endTurn)
    else this.endOfTurnScheduled = false
  }
}
