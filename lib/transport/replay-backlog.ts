import type { Socket } from 'node:net'

/**
 * A replay (a `rewind`, a resume) is written in one go, and a channel's history may be far
 * larger than the per-connection send buffer (100 events of 60 KB against 1 MiB): counted
 * like live events, it cut a client reading as fast as it could with 4008. So what a replay
 * leaves queued past the limit is allowed on top of it until the socket has drained it,
 * within four bounds (docs/protocol.md, "Limits"):
 *
 * - per connection, REPLAY_BACKLOG_MAX_BYTES;
 * - per user, REPLAY_BACKLOG_USER_BYTES over its connections' allowances, so one user's many
 *   streams rewinding and never reading cannot take the instance's room from everyone else;
 * - per instance, REPLAY_BACKLOG_TOTAL_BYTES over every connection's allowance;
 * - in time, REPLAY_DRAIN_MS: a backlog not drained by then is a client too slow (4008).
 *
 * A replay that cannot fit the room left is refused before a byte of it is written (the
 * connection is too slow, 4008), and one that outgrows it while being written is cut there.
 * Writing first and cutting after let one user stall every client: 100 paused SSE streams
 * rewinding 200 MB each copied 64 MiB apiece before each was cut, 25 s of CPU (a black-box
 * audit, session 25; SSE copies each stream's frames).
 *
 * The allowance lives in a WeakMap, not a field: idle connections (nearly all) hold nothing,
 * and the map is looked up only by a connection already past its limit.
 */
export const REPLAY_BACKLOG_MAX_BYTES = 64 * 1024 * 1024
export const REPLAY_BACKLOG_TOTAL_BYTES = 256 * 1024 * 1024
export const REPLAY_BACKLOG_USER_BYTES = 64 * 1024 * 1024
export const REPLAY_DRAIN_MS = 60_000

interface Allowance {
  /** What may be queued past the limit: while the replay is written, the room it has; after it, what it left there plus a limit's worth for what follows. */
  beyond: number
  /** What it counts in the totals: what the replay left queued past the limit (0 while written). */
  counted: number
  /** Whose allowance it is (the connection's user). */
  user: string
  /** Ends the allowance (drained, closed, or out of time); undefined while the replay is being written. */
  end?: () => void
}

const allowances = new WeakMap<object, Allowance>()
/** Bytes allowed beyond the limit over every connection of this process. */
let allowedTotal = 0
/** The same, per user with any allowed (an entry leaves when its user's last allowance ends). */
const allowedPerUser = new Map<string, number>()

/** What a replay for `user` may leave queued past the limit right now. */
function roomFor (user: string): number {
  return Math.max(0, Math.min(REPLAY_BACKLOG_MAX_BYTES, sharedRoomFor(user)))
}

/** The room other replays leave `user`: what is left of its own bound and of the instance's. */
function sharedRoomFor (user: string): number {
  return Math.min(REPLAY_BACKLOG_TOTAL_BYTES - allowedTotal, REPLAY_BACKLOG_USER_BYTES - (allowedPerUser.get(user) ?? 0))
}

/**
 * Whether a replay of `bytes` to `target` would not fit now only because other replays hold
 * the room it needs (its user's other connections', or the instance's): its connection's
 * own bound would take it. That room frees as they drain, so the subscribe is refused as one
 * to try again (`rate_limited`, SSE 503) instead of acknowledged and then cut with 4008,
 * losing the replay: thousands of large rewinds at once did that (a black-box audit,
 * session 26). `owner`'s own allowance counts as free: writeReplayWhole ends it first.
 */
export function replayMustWait (owner: object, target: ReplayTarget, bytes: number): boolean {
  if (target.socket === null) return false
  // What goes out between this check and the replay's write (the acknowledgement; over SSE
  // the head, the greeting and its channel list) counts too, so a replay that only just
  // fits is not acknowledged and then cut.
  const past = target.queued() + bytes + ACKNOWLEDGEMENT_BYTES - target.limit
  if (past <= 0 || past > REPLAY_BACKLOG_MAX_BYTES) return false
  const own = allowances.get(owner)?.counted ?? 0
  return past > sharedRoomFor(target.user) + own
}

/** An upper bound on what a subscribe's acknowledgement, or an SSE stream's opening, writes before its replay. */
const ACKNOWLEDGEMENT_BYTES = 64 * 1024

/** What a subscribe or stream refused by replayMustWait is told (`rate_limited`; SSE, a 503 with Retry-After). */
export const REPLAY_ROOM_TAKEN = 'history being replayed to other connections leaves no room for this replay just now; try again in a moment'

/** Bytes allowed beyond send buffer limits right now, over every connection (for tests and metrics). */
export const replayBacklogAllowed = (): number => allowedTotal

/** Whether `queued` bytes are more than `owner` may have queued: its limit, plus what its replay left past it (and the limit again, for what follows). */
export function pastSendLimit (owner: object, queued: number, limit: number): boolean {
  if (queued <= limit) return false
  const allowed = allowances.get(owner)
  return allowed === undefined || queued > limit + allowed.beyond
}

/** The connection a replay is written to. */
export interface ReplayTarget {
  /** Whose allowance the replay spends: the connection's user (budgetKeyOf). */
  user: string
  /** The socket to watch for 'drain'; null without one (the replay then counts as live events do). */
  socket: Socket | null
  /** Bytes queued on the connection right now. */
  queued: () => number
  /** The connection's send buffer limit. */
  limit: number
}

/**
 * Runs `writeReplay` (at least `bytes` long) allowing up to the room left (roomFor) past the
 * limit, then allows what it left queued until the socket has drained (Node emits 'drain'
 * once a socket that was full has written everything), it closes, or `drainMs` pass (then
 * `tooSlow` is called). Returns false when the replay does not fit: then nothing was
 * written (it could not fit from the start) or writing stopped past the room (the caller's
 * writes check pastSendLimit), and the caller treats the connection as too slow. Without a
 * socket to watch (a response that is not chunked), the replay is counted as live events are.
 */
export function writeReplayWhole (
  owner: object, target: ReplayTarget, bytes: number, writeReplay: () => void, tooSlow: () => void,
  drainMs = REPLAY_DRAIN_MS
): boolean {
  const { user, socket, queued, limit } = target
  if (socket === null) {
    writeReplay()
    return true
  }
  allowances.get(owner)?.end?.()
  const room = roomFor(user)
  if (queued() + bytes > limit + room) return false
  const writing: Allowance = { beyond: room, counted: 0, user }
  allowances.set(owner, writing)
  try {
    writeReplay()
  } finally {
    if (allowances.get(owner) === writing) allowances.delete(owner)
  }
  const backlog = queued() - limit
  if (backlog <= 0) return true
  if (backlog > room) return false
  allowedTotal += backlog
  allowedPerUser.set(user, (allowedPerUser.get(user) ?? 0) + backlog)
  // Live events and presence keep their limit on top of the backlog: without it the first
  // frame after a large replay cut a client that was reading as fast as it could (4008).
  const allowance: Allowance = { beyond: backlog + limit, counted: backlog, user }
  const timer = setTimeout(() => { end(); tooSlow() }, drainMs).unref()
  function end (): void {
    if (allowance.end === undefined) return
    allowance.end = undefined
    allowedTotal -= allowance.counted
    const left = (allowedPerUser.get(user) ?? 0) - allowance.counted
    if (left > 0) allowedPerUser.set(user, left)
    else allowedPerUser.delete(user)
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
