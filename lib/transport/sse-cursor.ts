import { CHANNEL_ALPHABET, isValidChannelName } from '../auth/channels.js'
import type { SincePosition } from '../broker/broker.js'
import type { StreamPosition } from '../core/event.js'

/**
 * The SSE `id:` cursor: the position of every channel of the stream, so one
 * Last-Event-ID resumes them all. Opaque to clients; the format is versioned so it can
 * change without misreading old cursors. Epochs contain neither `,` nor `;` (the brokers'
 * epochs), and channel names are written with cursorName, so they do not either.
 */
const VERSION = 'v1;'
const MAX_CURSOR_LENGTH = 64 * 1024

/** A character outside the channel alphabet. */
const OUTSIDE_ALPHABET = new RegExp(`[^${CHANNEL_ALPHABET}]`, 'g')
const ESCAPED = /%([0-9a-f]{4})/g

/**
 * A channel's name as a cursor holds it. Only a user's own channel can fall outside the
 * channel alphabet (`user:<sub>`, and a token's `sub` is its issuer's to choose: "auth0|…",
 * a name with a space or a newline); each of its UTF-16 units outside the alphabet is written
 * as `%` and four hex digits, so it cannot break the cursor's `,` and `;` nor end the `id:`
 * line. A name of the alphabet has no `%`: cursors of such names read as they always did.
 */
function cursorName (channel: string): string {
  if (isValidChannelName(channel)) return channel
  return channel.replace(OUTSIDE_ALPHABET, (unit) => `%${unit.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** The channel a cursor's name stands for (cursorName undone; a `%` it did not write stays). */
function channelOfCursorName (name: string): string {
  return name.includes('%') ? name.replace(ESCAPED, (_, hex: string) => String.fromCharCode(parseInt(hex, 16))) : name
}

/** One channel's position as a cursor writes it: every cursor and frame head is made of these. */
export function cursorPart (channel: string, epoch: string, offset: number): string {
  return `${cursorName(channel)},${epoch},${offset}`
}

export function encodeCursor (positions: ReadonlyMap<string, StreamPosition>): string {
  const parts: string[] = []
  for (const [channel, p] of positions) parts.push(cursorPart(channel, p.epoch, p.offset))
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
    cursor += cursorPart(positions[i] as string, positions[i + 1] as string, positions[i + 2] as number)
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
    positions.set(channelOfCursorName(channel), { epoch, offset })
  }
  return positions
}
