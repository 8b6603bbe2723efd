import type { HistoryResult, SincePosition } from './broker.js'
import type { PublishedEvent, StreamPosition } from '../core/event.js'

/**
 * Decides what a client that saw `since` has missed, given the channel's current
 * position and the history still held (oldest first, consecutive offsets).
 * All or nothing: a partial replay would hide a gap, so it is refused.
 */
export function recoverFrom (
  since: SincePosition,
  position: StreamPosition,
  history: readonly PublishedEvent[]
): HistoryResult {
  const refused: HistoryResult = { events: [], position, recovered: false }
  if (since.epoch !== undefined && since.epoch !== position.epoch) return refused
  if (since.offset > position.offset) return refused
  if (since.offset === position.offset) return { events: [], position, recovered: true }
  const oldest = history.length > 0 ? history[0].offset : position.offset + 1
  if (oldest > since.offset + 1) return refused
  const events = history.filter((e) => e.offset > since.offset && e.offset <= position.offset)
  return { events, position, recovered: true }
}
