import type { SincePosition } from '../broker/broker.js'
import type { StreamPosition } from '../core/event.js'

/**
 * The SSE `id:` cursor: the position of every channel of the stream, so one
 * Last-Event-ID resumes them all. Opaque to clients; the format is versioned so it can
 * change without misreading old cursors. Channel names and epochs contain neither
 * `,` nor `;` (see the channel alphabet and the brokers' epochs).
 */
const VERSION = 'v1;'
const MAX_CURSOR_LENGTH = 64 * 1024

export function encodeCursor (positions: ReadonlyMap<string, StreamPosition>): string {
  const parts: string[] = []
  for (const [channel, p] of positions) parts.push(`${channel},${p.epoch},${p.offset}`)
  return VERSION + parts.join(';')
}

/**
 * The same cursor from positions kept as `[channel, epoch, offset, …]` (sse-connection.ts:
 * a flat array per stream, not a Map and an object per channel).
 */
export function encodePositions (positions: ReadonlyArray<string | number>): string {
  let cursor = VERSION
  for (let i = 0; i < positions.length; i += 3) {
    if (i > 0) cursor += ';'
    cursor += `${positions[i]},${positions[i + 1]},${positions[i + 2]}`
  }
  return cursor
}

/** The positions in a cursor, or null when it is not one of ours. */
export function decodeCursor (cursor: string): Map<string, SincePosition> | null {
  if (!cursor.startsWith(VERSION) || cursor.length > MAX_CURSOR_LENGTH) return null
  const positions = new Map<string, SincePosition>()
  const body = cursor.slice(VERSION.length)
  if (body === '') return positions
  for (const part of body.split(';')) {
    const [channel, epoch, offsetText] = part.split(',')
    const offset = Number(offsetText)
    if (channel === undefined || channel === '' || epoch === undefined || !Number.isSafeInteger(offset) || offset < 0) return null
    positions.set(channel, { epoch, offset })
  }
  return positions
}
