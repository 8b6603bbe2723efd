import type { ServerResponse } from 'node:http'
import { CloseCode } from '../core/errors.js'
import { type Connection, HubMember } from '../hub/connection.js'
import type { EncodedEvent, StreamPosition } from '../core/event.js'
import type { PresenceCounts } from '../core/presence.js'
import type { Identity } from '../auth/identity.js'
import { encodeCursor } from './sse-cursor.js'

export interface SseConnectionOptions {
  /** Bytes the response may have queued before the client counts as too slow. */
  sendBufferLimit: number
  onTooSlow?: (connection: SseConnection) => void
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
export class SseConnection extends HubMember implements Connection {
  readonly transport = 'sse' as const
  private readonly positions = new Map<string, StreamPosition>()
  private closed = false
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
  }

  cursor (): string {
    return encodeCursor(this.positions)
  }

  sendEvent (encoded: EncodedEvent): void {
    const e = encoded.event
    const known = this.positions.get(e.channel)
    // The hub never delivers a channel's events out of order; this guards replays that
    // overlap live events after a reconnect, so the stream never repeats an event.
    if (known !== undefined && known.epoch === e.epoch && e.offset <= known.offset) return
    this.positions.set(e.channel, { offset: e.offset, epoch: e.epoch })
    this.write(`id: ${this.cursor()}\nevent: ${e.type}\ndata: ${encoded.sse}\n\n`)
  }

  /** `system:reset` (docs/protocol.md, WebSocket / Server-Sent Events): the cursor moves to the position the channel counts on from. */
  sendReset (channel: string, position: StreamPosition): void {
    this.positions.set(channel, { offset: position.offset, epoch: position.epoch })
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
    if (this.res.writableLength > this.options.sendBufferLimit) {
      this.options.onTooSlow?.(this)
      this.close(4008, 'too slow')
      this.res.destroy()
      return
    }
    this.res.write(text)
  }
}
