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

/** The connections written to in this turn (each once). */
const batched: Flushable[] = []
let endOfTurnScheduled = false
let wroteThisTurn = false
/** The previous turn wrote: traffic is streaming, so even first frames are corked. */
let streaming = false
let burstDepth = 0

/** Whether even a socket's first frame of the turn should be corked. */
export function batchesFirstFrame (): boolean {
  return streaming || burstDepth > 0
}

/** Registers a connection written to in this turn: flushed at the end of the burst or turn. */
export function joinBatch (connection: Flushable): void {
  batched.push(connection)
  wroteThisTurn = true
  if (!endOfTurnScheduled) {
    endOfTurnScheduled = true
    setImmediate(endTurn)
  }
}

/**
 * Runs `publish` as one burst: every frame it sends (synchronously, as the memory broker
 * delivers) is corked, and all of it leaves, one write per socket, when it returns.
 */
export function inBurst<T> (publish: () => T): T {
  burstDepth++
  try {
    return publish()
  } finally {
    if (--burstDepth === 0) flushAll()
  }
}

function flushAll (): void {
  for (const connection of batched) connection.flush()
  batched.length = 0
}

/** Runs at the end of every turn that wrote, and of the turn after (which ends streaming). */
function endTurn (): void {
  streaming = wroteThisTurn
  wroteThisTurn = false
  flushAll()
  if (streaming) setImmediate(endTurn)
  else endOfTurnScheduled = false
}
