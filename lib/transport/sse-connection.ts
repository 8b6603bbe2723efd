import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { CloseCode } from '../core/errors.js'
import { type Connection, HubMember } from '../hub/connection.js'
import type { EncodedEvent, StreamPosition } from '../core/event.js'
import type { PresenceCounts } from '../core/presence.js'
import type { Identity } from '../auth/identity.js'
import type { Flushable, WriteBatch } from '../core/write-batch.js'
import { encodeCursor } from './sse-cursor.js'

export interface SseConnectionOptions {
  /** Bytes the response may have queued before the client counts as too slow. */
  sendBufferLimit: number
  onTooSlow?: (connection: SseConnection) => void
  /** The app's write batching (lib/core/write-batch.ts), shared with its WebSocket connections. */
  writeBatch: WriteBatch
}

/** Headers of every event stream (docs/protocol.md, Server-Sent Events). */
export const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
  connection: 'keep-alive',
  'x-accel-buffering': 'no'
} as const

/**
 * A Connection over a Server-Sent Events response. Each event carries, as its `id:`,
 * a cursor of every channel's position, so a reconnect can resume all of them.
 */
export class SseConnection extends HubMember implements Connection, Flushable {
  readonly transport = 'sse' as const
  private readonly positions = new Map<string, StreamPosition>()
  private closed = false
  /**
   * `id: v1;` and the positions of every channel but `headChannel`, as bytes: the part of
   * an event of `headChannel` that is this stream's own (see sendEvent). Made at the
   * first event, so an idle stream holds nothing.
   */
  private head?: Buffer
  private headChannel?: string
  /** This turn's direct writes (lib/core/write-batch.ts): none yet, one written at once, or corked. */
  private turnWrites: null | 'written' | 'corked' = null
  /**
   * What was written before the route opened the stream (open): the hub may push presence
   * counts or a reset while the subscription is still being read, and writing them then would
   * send the response head early and put them before `system:connected`, which opens every
   * stream (docs/protocol.md, Server-Sent Events).
   */
  private waiting: string[] | null = []

  constructor (
    readonly id: string,
    public identity: Identity,
    private readonly res: ServerResponse,
    private readonly options: SseConnectionOptions
  ) {
    super()
    res.once('close', () => { this.closed = true })
  }

  /** Starts the stream (after the route wrote the head): `system:connected`, then whatever waited. */
  open (connected: unknown): void {
    const waiting = this.waiting ?? []
    this.waiting = null
    this.sendSystem('system:connected', connected, true)
    for (const text of waiting) this.write(text)
  }

  /** Records where a channel stands before its first event (from the subscription). */
  setPosition (channel: string, position: StreamPosition): void {
    this.positions.set(channel, position)
    if (channel !== this.headChannel) this.head = undefined
  }

  cursor (): string {
    return encodeCursor(this.positions)
  }

  /**
   * The event's `id:` cursor lists the event's channel last (the order of a cursor means
   * nothing: sse-cursor.ts), so an event is this stream's head (its other channels'
   * positions) followed by a tail shared by every stream (tailOf). On a fan-out each
   * stream then costs one small copy and one write, not a cursor, a string and its
   * encoding; and one socket write rather than the four of res.write's chunk framing.
   */
  sendEvent (encoded: EncodedEvent): void {
    const e = encoded.event
    const known = this.positions.get(e.channel)
    // The hub never delivers a channel's events out of order; this guards replays that
    // overlap live events after a reconnect, so the stream never repeats an event.
    if (known !== undefined && known.epoch === e.epoch && e.offset <= known.offset) return
    this.positions.set(e.channel, { offset: e.offset, epoch: e.epoch })
    if (!this.writable()) return
    const socket = this.directSocket()
    if (socket === null || this.waiting !== null) {
      this.write(`id: ${this.cursor()}\nevent: ${e.type}\ndata: ${encoded.sse}\n\n`)
      return
    }
    if (this.head === undefined || this.headChannel !== e.channel) {
      this.head = Buffer.from(headOf(this.positions, e.channel))
      this.headChannel = e.channel
    }
    // As WebSocket frames do (lib/core/write-batch.ts): a lone event leaves at once; in a
    // burst, or while events stream in, the socket stays corked to the end of the burst
    // or turn, so several publishes (one per HTTP request) share one write per stream.
    if (this.turnWrites === null) {
      this.turnWrites = this.options.writeBatch.batchesFirstFrame() ? 'corked' : 'written'
      if (this.turnWrites === 'corked') socket.cork()
      this.options.writeBatch.join(this)
    } else if (this.turnWrites === 'written') {
      this.turnWrites = 'corked'
      socket.cork()
    }
    socket.write(chunkOf(this.head, tailOf(encoded)))
    if (this.turnWrites === 'corked' && socket.writableLength > CORK_FLUSH_BYTES) {
      socket.uncork()
      this.turnWrites = 'written'
    }
  }

  /** Writes out what is corked; the next event is this stream's first of the turn again. */
  flush (): void {
    if (this.turnWrites === 'corked') this.res.socket?.uncork()
    this.turnWrites = null
  }

  /**
   * The socket, when an event may be written to it directly: the response is a chunked
   * HTTP/1.1 stream whose head is out and which holds nothing queued of its own, so
   * nothing written through it can come after (res.end's last chunk still goes through
   * it, after these). Else null, and events go through res.write.
   */
  private directSocket (): Socket | null {
    const res = this.res
    const socket = res.socket
    if (socket === null || !res.headersSent || !res.chunkedEncoding || socket.destroyed) return null
    return res.writableLength === socket.writableLength ? socket : null
  }

  /** `system:reset` (docs/protocol.md, WebSocket / Server-Sent Events): the cursor moves to the position the channel counts on from. */
  sendReset (channel: string, position: StreamPosition): void {
    this.setPosition(channel, { offset: position.offset, epoch: position.epoch })
    this.sendSystem('system:reset', { channel, payload: { position: { offset: position.offset, epoch: position.epoch } } }, true)
  }

  /** `event: presence`: not an event of the channel, so no `id:` (docs/protocol.md, Server-Sent Events / Presence). */
  sendPresence (channel: string, counts: PresenceCounts): void {
    this.sendSystem('presence', { channel, payload: { connections: counts.connections, users: counts.users } })
  }

  /** Writes a named event with no cursor change (system events). */
  sendSystem (event: string, data: unknown, withCursor = false): void {
    const id = withCursor ? `id: ${this.cursor()}\n` : ''
    this.write(`${id}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
  }

  heartbeat (): void {
    this.write(': heartbeat\n\n')
  }

  /**
   * SSE has no close codes: the stream just ends (and EventSource reconnects). A disconnect
   * (4003) says so first, with `event: system:disconnect`, so the client does not come back
   * with the same token.
   */
  close (code: number, reason: string): void {
    if (this.closed) return
    if (code === CloseCode.DISCONNECTED) this.sendSystem('system:disconnect', { code, reason })
    this.closed = true
    this.res.end()
  }

  get isClosed (): boolean {
    return this.closed
  }

  private write (text: string): void {
    if (this.closed) return
    if (this.waiting !== null) {
      this.waiting.push(text)
      return
    }
    if (!this.writable()) return
    this.res.write(text)
  }

  /** Whether the stream may be written to: open and not too far behind (else it is cut). */
  private writable (): boolean {
    if (this.closed) return false
    if (this.res.writableLength > this.options.sendBufferLimit) {
      this.options.onTooSlow?.(this)
      this.close(4008, 'too slow')
      this.res.destroy()
      return false
    }
    return true
  }
}

/** `id: v1;` and the cursor positions of every channel but `last`, each followed by `;`. */
function headOf (positions: ReadonlyMap<string, StreamPosition>, last: string): string {
  let head = 'id: v1;'
  for (const [channel, p] of positions) if (channel !== last) head += `${channel},${p.epoch},${p.offset};`
  return head
}

/** The last event's tail: the hub hands one event to all its streams in a row, so one entry is enough. */
let lastEncoded: EncodedEvent | undefined
let lastTail: Buffer = Buffer.alloc(0)

/** The rest of an event after a stream's head: its channel's position, `event:`, `data:`, the blank line. */
function tailOf (encoded: EncodedEvent): Buffer {
  if (encoded !== lastEncoded) {
    const e = encoded.event
    lastTail = Buffer.from(`${e.channel},${e.epoch},${e.offset}\nevent: ${e.type}\ndata: ${encoded.sse}\n\n`)
    lastEncoded = encoded
  }
  return lastTail
}

/** A socket with more than this corked is written out at once, as in ws-connection.ts. */
const CORK_FLUSH_BYTES = 64 * 1024

/** One HTTP/1.1 chunk (RFC 9112 §7.1) holding head and tail: two copies, one write. */
function chunkOf (head: Buffer, tail: Buffer): Buffer {
  const size = (head.length + tail.length).toString(16)
  const chunk = Buffer.allocUnsafe(size.length + 2 + head.length + tail.length + 2)
  let at = chunk.write(size, 0, 'latin1')
  chunk[at++] = 13
  chunk[at++] = 10
  at += head.copy(chunk, at)
  at += tail.copy(chunk, at)
  chunk[at++] = 13
  chunk[at] = 10
  return chunk
}
