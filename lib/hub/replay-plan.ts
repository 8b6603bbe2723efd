import type { HistoryResult, SincePosition } from '../broker/broker.js'
import type { PublishedEvent, StreamPosition } from '../core/event.js'

/**
 * What a subscriber gets of one channel when it subscribes: the decision at the seam
 * between history and live delivery (docs/protocol.md, "Resuming and rewinding"), kept
 * apart from the hub so each case can be tested alone (test/hub/replay-plan.test.ts).
 * The hub reads the broker as `readFor` says, then does what `planFor` says.
 */
export interface ChannelAsk {
  /**
   * When the connection already holds the channel: the offset after which every event of
   * it was sent to the connection. Undefined for a channel the subscribe joins.
   */
  sentAfter?: number
  /** The last position the client saw (resume). */
  since?: SincePosition
  /** How many of the channel's last events to send first (ignored with `since`, or for a held channel). */
  rewind?: number
}

export type ChannelRead =
  | { kind: 'position' }
  | { kind: 'since', since: SincePosition }
  | { kind: 'recent', count: number }

export interface ChannelPlan {
  /** For the acknowledgement's `recovered`, only when the client gave a `since`. */
  recovered?: boolean
  /** A `system:reset` to this position first: the replay goes back before events already sent live. */
  reset?: StreamPosition
  /** Sent right after the acknowledgement, oldest first. */
  replay: readonly PublishedEvent[]
  /**
   * Live events held back during the read go out after the replay when their offset is
   * above this: the replay covered everything up to the position read (0: all are new).
   */
  liveAfter: number
  /** The connection's new `sentAfter` for the channel; undefined leaves it as it was. */
  sentAfter?: number
}

const NOTHING: readonly PublishedEvent[] = Object.freeze([])

/** Whether live events of the channel must be held back while it is read (it will replay, or it is new). */
export const holdsLive = (ask: ChannelAsk): boolean => ask.sentAfter === undefined || ask.since !== undefined

export function readFor (ask: ChannelAsk): ChannelRead {
  if (ask.since !== undefined) return { kind: 'since', since: ask.since }
  if (ask.sentAfter === undefined && ask.rewind !== undefined) return { kind: 'recent', count: ask.rewind }
  return { kind: 'position' }
}

/**
 * What to send for the channel, given what `readFor` read. `firstHeld`: the offset of the
 * first event held back for the connection while it was read (undefined: none).
 */
export function planFor (ask: ChannelAsk, result: HistoryResult, firstHeld?: number): ChannelPlan {
  const position = result.position
  if (ask.sentAfter === undefined) {
    // A channel the subscribe joins: from `since`, from `rewind` events back, or from now.
    if (ask.since !== undefined) {
      return result.recovered
        ? { recovered: true, replay: result.events, liveAfter: position.offset, sentAfter: ask.since.offset }
        : { recovered: false, replay: NOTHING, liveAfter: position.offset, sentAfter: position.offset }
    }
    if (ask.rewind !== undefined && result.events.length > 0) {
      return { replay: result.events, liveAfter: position.offset, sentAfter: result.events[0].offset - 1 }
    }
    return { replay: NOTHING, liveAfter: position.offset, sentAfter: position.offset }
  }
  if (ask.since === undefined) {
    // Held already and named again: its position, nothing else.
    return { replay: NOTHING, liveAfter: 0 }
  }
  // Held already (the user's own channel, joined at connect) and resumed: what was held back
  // during the read is new to the connection, unless the client saw it before (up to `since`).
  const since = ask.since
  const sent = ask.sentAfter
  const sameEpoch = since.epoch === undefined || since.epoch === position.epoch
  if (since.offset >= sent && position.offset >= since.offset && sameEpoch) {
    // Everything after `since` went out live, or follows from what was held back.
    return { recovered: true, replay: NOTHING, liveAfter: since.offset }
  }
  if (!result.recovered) return { recovered: false, replay: NOTHING, liveAfter: 0 }
  // Events after `sent` that went out before the read, rather than being held back: those
  // the client missed before them would go backwards (docs/protocol.md: never without a
  // reset). So a reset to `since` comes first, then everything after it.
  const wentOutLive = position.offset > sent && (firstHeld === undefined || firstHeld > sent + 1)
  if (wentOutLive) {
    return { recovered: true, reset: { offset: since.offset, epoch: position.epoch }, replay: result.events, liveAfter: position.offset, sentAfter: since.offset }
  }
  // Nothing went out after `sent`: history fills in what the connection was not sent, in order.
  return { recovered: true, replay: result.events.filter((e) => e.offset <= sent), liveAfter: 0, sentAfter: since.offset }
}
