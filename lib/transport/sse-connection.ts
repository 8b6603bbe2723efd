import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { CloseCode } from '../core/errors.js'
import { type Connection, HubMember } from '../hub/connection.js'
import type { EncodedEvent, StreamPosition } from '../core/event.js'
import type { EncodedPresence } from '../core/presence.js'
import type { Identity } from '../auth/identity.js'
import type { Expiries, Expiring } from '../auth/expiry.js'
import type { Flushable, WriteBatch } from '../core/write-batch.js'
import { encodePositions } from './sse-cursor.js'
import { chunkOf, headOf, HEARTBEAT_CHUNK, tailOf } from './sse-frames.js'
import { budgetKeyOf } from './history-read-budget.js'
import { pastSendLimit, replayMustWait, type ReplayTarget, writeReplayWhole } from './replay-backlog.js'
import { releaseHttpConnection } from './internals.js'

/**
 * What every stream of one route shares: one object for all of them, so a stream holds
 * no options object or callback closures of its own (idle memory per stream).
 */
export interface SseStreams {
  /** Bytes the response may have queued before the client counts as too slow. */
  sendBufferLimit: number
  /** The app's write batching (lib/core/write-batch.ts), shared with its WebSocket connections. */
  writeBatch: WriteBatch
  /** The app's token expiries: an opened stream ends when its token's `exp` passes. */
  expiries?: Expiries
  onTooSlow?: (connection: SseConnection) => void
  /** Called once when the response closes, whoever closed it. */
  onClosed?: (connection: SseConnection) => void
}

/**
 * Headers of every event stream (docs/protocol.md, Server-Sent Events). `Connection: close`:
 * a stream's socket is taken from the HTTP server once its head is out (releaseHttp), so no
 * request after it could be read there; said so, neither a client's pool nor a proxy's
 * upstream keep-alive pool sends one (nginx would have sent a publish down a socket closing).
 */
export const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
  connection: 'close',
  'x-accel-buffering': 'no'
} as const

/** Where a response's connection is kept: one property, no closure per stream to find it. */
const CONNECTION = Symbol('sseConnection')
type StreamResponse = ServerResponse & { [CONNECTION]?: SseConnection }

/** The one 'close' listener of every stream (a shared function: `this` is the response). */
function onResponseClose (this: StreamResponse): void {
  this[CONNECTION]?.closedByResponse()
}

/** A socket with more than this waiting in a turn is written out at once, as in ws-connection.ts. */
const TURN_FLUSH_BYTES = 64 * 1024

/**
 * A Connection over a Server-Sent Events response. Each event carries, as its `id:`,
 * a cursor of every channel's position, so a reconnect can resume all of them.
 */
export class SseConnection extends HubMember implements Connection, Flushable, Expiring {
  /**
   * Every channel's position, `[channel, epoch, offset, …]`, exactly sized (as
   * lib/hub/held-channels.ts: a Map and an object per position cost about 250 B a stream).
   */
  private positions: Array<string | number> = []
  private closed = false
  /**
   * `id: v1;` and the positions of every channel but `headChannel`, as bytes: the part of
   * an event of `headChannel` that is this stream's own (see sendEvent). Made at the
   * first event, so an idle stream holds nothing.
   */
  private head?: Buffer
  private headChannel?: string
  /**
   * The socket once the stream is open as a chunked HTTP/1.1 response with its head out
   * (open): every frame is then one HTTP chunk written to it directly. Null before, and
   * for a response that is not chunked (an HTTP/1.0 client): frames go through res.write.
   */
  private socket: Socket | null = null
  /** This turn's direct writes (lib/core/write-batch.ts): none yet, one written at once, or batched. */
  private turnWrites: null | 'written' | 'batched' = null
  /** Event bytes (heads and tails) batched this turn: written as one chunk at the end of it. */
  private batch: Buffer[] | null = null
  private batchBytes = 0
  /**
   * What was written before the route opened the stream (open): the hub may push presence
   * counts or a reset while the subscription is still being read, and writing them then would
   * send the response head early and put them before `system:connected`, which opens every
   * stream (docs/protocol.md, Server-Sent Events).
   */
  private waiting: string[] | null = []
  /**
   * A close asked for before the route opened the stream (a disconnect or revoke racing its
   * set-up): ending the response then answered an empty 200, which EventSource takes as
   * fatal, never seeing `system:disconnect`. It is done as soon as the stream opens.
   */
  private closeOnOpen: { code: number, reason: string } | null = null

  constructor (
    readonly id: string,
    public identity: Identity,
    private readonly res: ServerResponse,
    private readonly streams: SseStreams
  ) {
    super()
    ;(res as StreamResponse)[CONNECTION] = this
    res.on('close', onResponseClose)
  }

  get transport (): 'sse' {
    return 'sse'
  }

  /**
   * Starts the stream once the route set the head (writeHead): sends the head on its own,
   * then `system:connected` (and `thenSystem`, a system event that must come next), then
   * whatever waited. The head goes out alone so that the
   * response's header string is flattened (Node keeps it for the stream's life: as built,
   * a tree of some thirty strings).
   */
  open (connected: unknown, thenSystem?: { event: string, data: unknown }): void {
    if (this.closed) return
    const res = this.res
    res.flushHeaders()
    const socket = res.socket
    // Chunked HTTP/1.1 with nothing of its own queued: frames may go to the socket directly,
    // and nothing written through res can come after them (res.end's last chunk still goes
    // through it, after these).
    if (socket !== null && res.chunkedEncoding && res.writableLength === socket.writableLength) {
      this.socket = socket
      // A turn later: a parser freed while it is still reading the request (a handler that
      // ran within that read) is put back in the server's connection list by Node 20, whose
      // server.close() then fails on it.
      setImmediate(releaseLater, this)
    }
    this.streams.expiries?.watch(this.identity.exp, this)
    const waiting = this.waiting ?? []
    this.waiting = null
    this.sendSystem('system:connected', connected, true)
    if (thenSystem !== undefined) this.sendSystem(thenSystem.event, thenSystem.data)
    for (const text of waiting) this.write(text)
    if (this.closeOnOpen !== null) this.close(this.closeOnOpen.code, this.closeOnOpen.reason)
  }

  /**
   * Takes the stream's socket from Node's HTTP server (releaseHttpConnection: its request
   * parser freed, a few kB a stream), unless the stream ended meanwhile. The response's end
   * still ends the socket (Node's own, for `Connection: close`).
   */
  releaseHttp (): void {
    if (this.closed || this.socket === null || this.socket.destroyed) return
    releaseHttpConnection(this.socket, this.res)
  }

  /**
   * For shutdown: a stream ended (close) whose last bytes a client that stopped reading has
   * not taken is cut. Its socket is no longer the HTTP server's (releaseHttpConnection), so
   * the server's closeIdleConnections(), which cut such a socket before, does not see it,
   * and server.close() waited for it until the grace timeout killed the process (review,
   * session 32).
   */
  cutIfEnded (): void {
    if (this.closed && !this.res.destroyed) this.res.destroy()
  }

  /** Records where a channel stands before its first event (from the subscription). */
  setPosition (channel: string, position: StreamPosition): void {
    this.place(indexOf(this.positions, channel), channel, position.epoch, position.offset)
    if (channel !== this.headChannel) this.head = undefined
  }

  /** Sets a channel's position at its index in `positions` (-1: a new channel, appended). */
  private place (at: number, channel: string, epoch: string, offset: number): void {
    if (at === -1) {
      this.positions = this.positions.concat([channel, epoch, offset])
    } else {
      this.positions[at + 1] = epoch
      this.positions[at + 2] = offset
    }
  }

  cursor (): string {
    return encodePositions(this.positions)
  }

  /**
   * The event's `id:` cursor lists the event's channel last (the order of a cursor means
   * nothing: sse-cursor.ts), so an event is this stream's head (its other channels'
   * positions) followed by a tail shared by every stream (tailOf). In a burst or while
   * events stream in, a stream's events of the turn leave as one chunk in one write, at
   * the end of the burst or turn (lib/core/write-batch.ts); a lone event leaves at once.
   */
  sendEvent (encoded: EncodedEvent): void {
    const e = encoded.event
    const positions = this.positions
    const at = indexOf(positions, e.channel)
    // The hub never delivers a channel's events out of order; this guards replays that
    // overlap live events after a reconnect, so the stream never repeats an event.
    if (at !== -1 && positions[at + 1] === e.epoch && e.offset <= (positions[at + 2] as number)) return
    this.place(at, e.channel, e.epoch, e.offset)
    if (!this.writable()) return
    if (this.socket === null) {
      this.write(`id: ${this.cursor()}\nevent: ${e.type}\ndata: ${encoded.sse}\n\n`)
      return
    }
    if (this.head === undefined || this.headChannel !== e.channel) {
      this.head = Buffer.from(headOf(this.positions, e.channel))
      this.headChannel = e.channel
    }
    const tail = tailOf(encoded)
    if (this.turnWrites === null) {
      this.streams.writeBatch.join(this)
      if (this.streams.writeBatch.batchesFirstFrame()) {
        this.turnWrites = 'batched'
      } else {
        this.turnWrites = 'written'
        this.socket.write(chunkOf([this.head, tail], this.head.length + tail.length))
        return
      }
    }
    this.turnWrites = 'batched'
    if (this.batch === null) this.batch = [this.head, tail]
    else this.batch.push(this.head, tail)
    this.batchBytes += this.head.length + tail.length
    if (this.batchBytes > TURN_FLUSH_BYTES) this.writeBatched()
  }

  /** Writes out what the turn batched; the next event is this stream's first of the turn again. */
  flush (): void {
    this.writeBatched()
    this.turnWrites = null
  }

  /** The batched events as one HTTP chunk, in one write. */
  private writeBatched (): void {
    const batch = this.batch
    if (batch === null) return
    this.batch = null
    const bytes = this.batchBytes
    this.batchBytes = 0
    if (!this.closed && this.socket !== null) this.socket.write(chunkOf(batch, bytes))
  }

  /** Replayed history goes out whole, however large (lib/transport/replay-backlog.ts). */
  sendReplayed (events: readonly EncodedEvent[]): void {
    if (!this.writable()) return
    // Batched replay bytes are written out first, so the backlog is measured on the socket.
    const whole = writeReplayWhole(this, this.replayTarget(this.socket), this.replayBytes(events),
      () => { for (const event of events) this.sendEvent(event); this.writeBatched() }, () => this.tooSlow())
    if (!whole) this.tooSlow()
  }

  /** Asked before the stream opens (routes/sse.ts refuses with a 503), once its positions are set: the response's socket stands for the stream's. */
  replayMustWait (events: readonly EncodedEvent[]): boolean {
    return replayMustWait(this, this.replayTarget(this.socket ?? this.res.socket), this.replayBytes(events))
  }

  private replayTarget (socket: Socket | null): ReplayTarget {
    return { user: budgetKeyOf(this.identity, this.id), socket, queued: () => this.res.writableLength, limit: this.streams.sendBufferLimit }
  }

  /**
   * At least a replay's frames' bytes, enough to refuse one that cannot fit before writing
   * any: each event's data, and an `id:` naming every channel's position (for a stream of
   * many long names, most of a frame: review).
   */
  private replayBytes (events: readonly EncodedEvent[]): number {
    let bytes = events.length * headOf(this.positions, '').length
    for (const event of events) bytes += event.sse.length
    return bytes
  }

  /** `system:reset` (docs/protocol.md, WebSocket / Server-Sent Events): the cursor moves to the position the channel counts on from. */
  sendReset (channel: string, position: StreamPosition): void {
    this.setPosition(channel, position)
    this.sendSystem('system:reset', { channel, payload: { position: { offset: position.offset, epoch: position.epoch } } }, true)
  }

  /** `event: presence`: not an event of the channel, so no `id:` (docs/protocol.md, Server-Sent Events / Presence). */
  sendPresence (presence: EncodedPresence): void {
    this.write(presence.sse)
  }

  /** Writes a named event with no cursor change (system events). */
  sendSystem (event: string, data: unknown, withCursor = false): void {
    const id = withCursor ? `id: ${this.cursor()}\n` : ''
    this.write(`${id}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
  }

  /** A comment, so that proxies keep an idle stream open: one chunk shared by every stream. */
  heartbeat (): void {
    if (this.socket === null) {
      this.write(': heartbeat\n\n')
    } else if (this.writable()) {
      this.writeBatched()
      this.socket.write(HEARTBEAT_CHUNK)
    }
  }

  /**
   * SSE has no close codes: the stream just ends (and EventSource reconnects). A disconnect
   * (4003) and a token's expiry (4001) say so first, with `event: system:disconnect`, so the
   * client does not come back with the same token (a page that only has EventSource sees no
   * 401: it would not know why its stream stopped).
   */
  close (code: number, reason: string): void {
    if (this.closed) return
    if (this.waiting !== null) {
      this.closeOnOpen ??= { code, reason }
      return
    }
    if (code === CloseCode.DISCONNECTED || code === CloseCode.TOKEN_EXPIRED) this.sendSystem('system:disconnect', { code, reason })
    this.writeBatched()
    this.closed = true
    this.res.end()
  }

  /** The token's `exp` passed (lib/auth/expiry.ts): EventSource's reconnect with it is then refused with 401. */
  expire (): void {
    this.close(CloseCode.TOKEN_EXPIRED, 'token expired')
  }

  /** The response closed (onResponseClose): ended by us, or the client went. */
  closedByResponse (): void {
    this.closed = true
    this.batch = null
    this.streams.expiries?.unwatch(this.identity.exp, this)
    this.streams.onClosed?.(this)
  }

  get isClosed (): boolean {
    return this.closed
  }

  /** Any other frame, after what the turn batched, so nothing overtakes an event. */
  private write (text: string): void {
    if (this.closed) return
    if (this.waiting !== null) {
      this.waiting.push(text)
      return
    }
    if (!this.writable()) return
    if (this.socket === null) {
      this.res.write(text)
      return
    }
    this.writeBatched()
    const bytes = Buffer.from(text)
    this.socket.write(chunkOf([bytes], bytes.length))
  }

  /**
   * Whether the stream may be written to: open and not too far behind (else it is cut).
   * Behind means past the send buffer limit, plus what a replay left queued
   * (lib/transport/replay-backlog.ts).
   */
  private writable (): boolean {
    if (this.closed) return false
    if (pastSendLimit(this, this.res.writableLength, this.streams.sendBufferLimit)) {
      this.tooSlow()
      return false
    }
    return true
  }

  private tooSlow (): void {
    this.streams.onTooSlow?.(this)
    this.close(4008, 'too slow')
    this.res.destroy()
  }
}

/** One function for every stream's deferred release: no closure per stream. */
function releaseLater (connection: SseConnection): void {
  connection.releaseHttp()
}

function indexOf (positions: ReadonlyArray<string | number>, channel: string): number {
  for (let i = 0; i < positions.length; i += 3) if (positions[i] === channel) return i
  return -1
}
