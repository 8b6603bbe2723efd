import type { EncodedEvent } from '../core/event.js'
import { cursorPart } from './sse-cursor.js'

/**
 * The bytes of an SSE stream's frames (docs/protocol.md, Server-Sent Events), for
 * sse-connection.ts. A stream's positions are `[channel, epoch, offset, …]`
 * (sse-cursor.ts, encodePositions).
 */

/** `id: v1;` and the cursor positions of every channel but `last`, each followed by `;`. */
export function headOf (positions: ReadonlyArray<string | number>, last: string): string {
  let head = 'id: v1;'
  for (let i = 0; i < positions.length; i += 3) {
    if (positions[i] !== last) head += `${cursorPart(positions[i] as string, positions[i + 1] as string, positions[i + 2] as number)};`
  }
  return head
}

/** The last event's tail: the hub hands one event to all its streams in a row, so one entry is enough. */
let lastEncoded: EncodedEvent | undefined
let lastTail: Buffer = Buffer.alloc(0)

/** The rest of an event after a stream's head: its channel's position, `event:`, `data:`, the blank line. */
export function tailOf (encoded: EncodedEvent): Buffer {
  if (encoded !== lastEncoded) {
    const e = encoded.event
    lastTail = Buffer.from(`${cursorPart(e.channel, e.epoch, e.offset)}\nevent: ${e.type}\ndata: ${encoded.sse}\n\n`)
    lastEncoded = encoded
  }
  return lastTail
}

/**
 * One HTTP/1.1 chunk (RFC 9112 §7.1) holding `parts` (`bytes` in all), in one Buffer: one
 * socket write, where res.write makes three (size, data, CRLF) per frame. The copies
 * cost less than the writes (a stream's events of a turn are a few kB).
 */
export function chunkOf (parts: readonly Buffer[], bytes: number): Buffer {
  const size = bytes.toString(16)
  const chunk = Buffer.allocUnsafe(size.length + 2 + bytes + 2)
  let at = chunk.write(size, 0, 'latin1')
  chunk[at++] = 13
  chunk[at++] = 10
  for (const part of parts) at += part.copy(chunk, at)
  chunk[at++] = 13
  chunk[at] = 10
  return chunk
}

/** The comment heartbeat as a whole chunk, shared by every stream. */
export const HEARTBEAT_CHUNK = chunkOf([Buffer.from(': heartbeat\n\n')], 13)
