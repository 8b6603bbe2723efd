import type { Socket } from 'node:net'

/**
 * A replay (a `rewind`, a resume) is written in one go, and a channel's history may be far
 * larger than the per-connection send buffer (100 events of 60 KB against 1 MiB): counted
 * like live events, it cut a client reading as fast as it could with 4008. So what a replay
 * leaves queued past the limit is allowed on top of it until the socket has drained it, up
 * to REPLAY_BACKLOG_MAX_BYTES in all; past that, or for live events beyond limit plus
 * allowance, the client is too slow as before (docs/protocol.md, "Limits").
 *
 * Replayed frames are mostly shared with every other reader (the history held in memory
 * keeps one encoding per event), and reads from Redis are paced per user by the history
 * read budget, so the allowance grows no copy per connection that the budget does not see.
 *
 * The allowance lives in a WeakMap, not a field: idle connections (nearly all) hold nothing,
 * and the map is looked up only by a connection already past its limit.
 */
export const REPLAY_BACKLOG_MAX_BYTES = 64 * 1024 * 1024

/** Bytes a connection may have queued beyond its limit: Infinity while a replay is being written. */
const allowances = new WeakMap<object, number>()

/** Whether `queued` bytes are more than `owner` may have queued: its limit, plus what its replays left. */
export function pastSendLimit (owner: object, queued: number, limit: number): boolean {
  if (queued <= limit) return false
  const allowed = allowances.get(owner)
  return allowed === undefined || queued > limit + allowed
}

/**
 * Runs `writeReplay` with no limit, then allows what it left queued beyond `limit` until
 * `socket` has drained (Node emits 'drain' once a socket that was full has written
 * everything). Returns false when the backlog is over REPLAY_BACKLOG_MAX_BYTES: the caller
 * then treats the connection as too slow. Without a socket to watch for 'drain' (a response
 * that is not chunked), the replay is counted as live events are.
 */
export function writeReplayWhole (owner: object, socket: Socket | null, queued: () => number, limit: number, writeReplay: () => void): boolean {
  if (socket === null) {
    writeReplay()
    return true
  }
  const before = allowances.get(owner)
  allowances.set(owner, Infinity)
  try {
    writeReplay()
  } finally {
    if (before === undefined) allowances.delete(owner)
    else allowances.set(owner, before)
  }
  const backlog = queued() - limit
  if (backlog <= 0) return true
  if (backlog > REPLAY_BACKLOG_MAX_BYTES) return false
  // One listener per connection: a replay while the last one drains only raises the allowance.
  if (before === undefined) socket.once('drain', () => allowances.delete(owner))
  allowances.set(owner, backlog)
  return true
}
