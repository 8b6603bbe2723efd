import type { Socket } from 'node:net'

/**
 * A replay (a `rewind`, a resume) is written in one go, and a channel's history may be far
 * larger than the per-connection send buffer (100 events of 60 KB against 1 MiB): counted
 * like live events, it cut a client reading as fast as it could with 4008. So what a replay
 * leaves queued past the limit is allowed on top of it until the socket has drained it,
 * within three bounds (docs/protocol.md, "Limits"):
 *
 * - per connection, REPLAY_BACKLOG_MAX_BYTES (a replay past it is cut while being written);
 * - per instance, REPLAY_BACKLOG_TOTAL_BYTES over every connection's allowance: a replay that
 *   would go past it is counted as live events are (a user's many streams rewinding and never
 *   reading cannot hold more; SSE copies each stream's frames);
 * - in time, REPLAY_DRAIN_MS: a backlog not drained by then is a client too slow (4008).
 *
 * The allowance lives in a WeakMap, not a field: idle connections (nearly all) hold nothing,
 * and the map is looked up only by a connection already past its limit.
 */
export const REPLAY_BACKLOG_MAX_BYTES = 64 * 1024 * 1024
export const REPLAY_BACKLOG_TOTAL_BYTES = 256 * 1024 * 1024
export const REPLAY_DRAIN_MS = 60_000

interface Allowance {
  bytes: number
  /** Ends the allowance (drained, closed, or out of time); undefined while the replay is being written. */
  end?: () => void
}

const allowances = new WeakMap<object, Allowance>()
/** Bytes allowed beyond the limit over every connection of this process. */
let allowedTotal = 0

/** Bytes allowed beyond send buffer limits right now, over every connection (for tests and metrics). */
export const replayBacklogAllowed = (): number => allowedTotal

/** Whether `queued` bytes are more than `owner` may have queued: its limit, plus what its replay left. */
export function pastSendLimit (owner: object, queued: number, limit: number): boolean {
  if (queued <= limit) return false
  const allowed = allowances.get(owner)
  return allowed === undefined || queued > limit + allowed.bytes
}

/**
 * Runs `writeReplay` allowing up to REPLAY_BACKLOG_MAX_BYTES past `limit`, then allows what it
 * left queued until `socket` has drained (Node emits 'drain' once a socket that was full has
 * written everything), it closes, or `drainMs` pass (then `tooSlow` is called). Returns
 * false when the backlog may not be allowed (over either bound): the caller then treats the
 * connection as too slow. Without a socket to watch (a response that is not chunked), the
 * replay is counted as live events are.
 */
export function writeReplayWhole (
  owner: object, socket: Socket | null, queued: () => number, limit: number, writeReplay: () => void, tooSlow: () => void,
  drainMs = REPLAY_DRAIN_MS
): boolean {
  if (socket === null) {
    writeReplay()
    return true
  }
  const before = allowances.get(owner)
  before?.end?.()
  const writing: Allowance = { bytes: REPLAY_BACKLOG_MAX_BYTES }
  allowances.set(owner, writing)
  try {
    writeReplay()
  } finally {
    if (allowances.get(owner) === writing) allowances.delete(owner)
  }
  const backlog = queued() - limit
  if (backlog <= 0) return true
  if (backlog > REPLAY_BACKLOG_MAX_BYTES || allowedTotal + backlog > REPLAY_BACKLOG_TOTAL_BYTES) return false
  allowedTotal += backlog
  const allowance: Allowance = { bytes: backlog }
  const timer = setTimeout(() => { end(); tooSlow() }, drainMs).unref()
  function end (): void {
    if (allowance.end === undefined) return
    allowance.end = undefined
    allowedTotal -= allowance.bytes
    clearTimeout(timer)
    socket?.off('drain', end)
    socket?.off('close', end)
    if (allowances.get(owner) === allowance) allowances.delete(owner)
  }
  allowance.end = end
  socket.once('drain', end)
  socket.once('close', end)
  allowances.set(owner, allowance)
  return true
}
