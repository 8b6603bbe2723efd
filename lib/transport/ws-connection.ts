import type { Socket } from 'node:net'
import type { WebSocket } from 'ws'
import { type Connection, HubMember } from '../hub/connection.js'
import { CloseCode } from '../core/errors.js'
import type { EncodedEvent, StreamPosition } from '../core/event.js'
import type { EncodedPresence } from '../core/presence.js'
import type { Identity } from '../auth/identity.js'
import type { Flushable, WriteBatch } from '../core/write-batch.js'
import { rawSocketOf, releaseReadBuffers } from './internals.js'
import { budgetKeyOf } from './history-read-budget.js'
import { pastSendLimit, replayMustWait, type ReplayTarget, writeReplayWhole } from './replay-backlog.js'
import { serverFrame } from './protocol.js'

export interface WsConnectionOptions {
  /** Bytes the socket may have queued before the client counts as too slow (4008). */
  sendBufferLimit: number
  /** The app's write batching (lib/core/write-batch.ts): when this socket's frames leave. */
  writeBatch: WriteBatch
  /** Called once when the connection is cut for being too slow. */
  onTooSlow?: (connection: WsConnection) => void
}

/**
 * A socket with more than this corked is written out at once, so batching never makes a
 * fast client look too slow.
 */
const CORK_FLUSH_BYTES = 64 * 1024

/** A close frame's reason holds at most 123 bytes of UTF-8 (RFC 6455 §5.5). */
const MAX_CLOSE_REASON_BYTES = 123

/**
 * The reason cut to what a close frame holds, at a character boundary. ws throws on a longer
 * one, and the socket was then cut without its code: a disconnect's reason comes from the
 * API (up to 200 characters), and the client saw 1006 where 4003 was promised.
 */
function closeReason (reason: string): string {
  if (Buffer.byteLength(reason) <= MAX_CLOSE_REASON_BYTES) return reason
  let cut = ''
  let bytes = 0
  for (const char of reason) {
    bytes += Buffer.byteLength(char)
    if (bytes > MAX_CLOSE_REASON_BYTES) break
    cut += char
  }
  return cut
}

/** Sends a Buffer as a text frame (the encoded event is UTF-8 JSON). */
const TEXT = { binary: false } as const

/**
 * A Connection over a `ws` WebSocket. `O`: what the subclass needs beside the options,
 * kept in the same shared object (a field per socket is memory per connection).
 */
export class WsConnection<O extends WsConnectionOptions = WsConnectionOptions> extends HubMember implements Connection, Flushable {
  /** Heartbeat intervals since the last pong (routes/ws.ts): 0 when the client answered. */
  unanswered = 0
  private closing = false
  /** This turn's writes (lib/core/write-batch.ts): none yet, one frame written at once, or corked. */
  private turnWrites: null | 'written' | 'corked' = null

  constructor (
    readonly id: string,
    public identity: Identity,
    readonly socket: WebSocket,
    protected readonly options: O
  ) {
    super()
  }

  // Constants and what the socket already knows are getters, not fields on every socket.
  get transport (): 'ws' {
    return 'ws'
  }

  /** No extension was negotiated (no compression): event frames can go out prebuilt. */
  private get plainFrames (): boolean {
    return this.socket.extensions === ''
  }

  sendEvent (event: EncodedEvent): void {
    // Without the TCP socket (lib/transport/internals.ts) frames go through ws.send.
    const raw = this.plainFrames ? rawSocketOf(this.socket) : undefined
    if (raw === undefined) return this.send(event.wsBytes)
    this.writeBuilt(raw, event.wsFrameBytes)
  }

  /** Replayed history goes out whole, however large (lib/transport/replay-backlog.ts). */
  sendReplayed (events: readonly EncodedEvent[]): void {
    if (!this.writable()) return
    const whole = writeReplayWhole(this, this.replayTarget(), replayBytes(events), () => { for (const event of events) this.sendEvent(event) }, () => this.tooSlow())
    if (!whole) this.tooSlow()
  }

  replayMustWait (events: readonly EncodedEvent[]): boolean {
    return replayMustWait(this, this.replayTarget(), replayBytes(events))
  }

  private replayTarget (): ReplayTarget {
    return { user: budgetKeyOf(this.identity, this.id), socket: rawSocketOf(this.socket) ?? null, queued: () => this.socket.bufferedAmount, limit: this.options.sendBufferLimit }
  }

  sendPresence (presence: EncodedPresence): void {
    const raw = this.plainFrames ? rawSocketOf(this.socket) : undefined
    if (raw === undefined) return this.send(presence.ws)
    this.writeBuilt(raw, presence.wsFrameBytes)
  }

  /**
   * Writes a frame built once for every socket it goes to (an event, a presence push):
   * ws's framing of each send (two option objects, a header and two writes) was most of a
   * fan-out's allocations, and so of its GC. Frames are written whole, so they never
   * interleave with ws's own.
   */
  private writeBuilt (raw: Socket, frame: Buffer): void {
    if (!this.writable()) return
    if (this.turnWrites === null && !this.options.writeBatch.batchesFirstFrame()) {
      // The turn's first frame, outside a burst or stream: out at once (lib/core/write-batch.ts).
      this.turnWrites = 'written'
      this.options.writeBatch.join(this)
    } else {
      this.cork(raw)
    }
    raw.write(frame)
    this.flushIfFull(raw)
  }

  sendReset (channel: string, position: StreamPosition): void {
    this.send(serverFrame.reset(channel, position))
  }

  /** Sends a text frame (a string, or UTF-8 bytes) unless the client has fallen too far behind. */
  send (text: string | Buffer): void {
    if (!this.writable()) return
    const raw = rawSocketOf(this.socket)
    if (raw !== undefined) this.cork(raw)
    this.socket.send(text, TEXT)
    if (raw !== undefined) this.flushIfFull(raw)
  }

  /**
   * Whether a frame may be written now: the socket is open and not too far behind (else
   * it is cut with 4008). Behind means past the send buffer limit, plus what a replay left
   * queued (lib/transport/replay-backlog.ts).
   */
  private writable (): boolean {
    if (!this.isOpen) return false
    if (pastSendLimit(this, this.socket.bufferedAmount, this.options.sendBufferLimit)) {
      this.tooSlow()
      return false
    }
    return true
  }

  private tooSlow (): void {
    this.options.onTooSlow?.(this)
    this.close(CloseCode.TOO_SLOW, 'send buffer overflow')
  }

  /** Corks the socket until the end of the burst or turn (once per turn). */
  private cork (raw: Socket): void {
    if (this.turnWrites === 'corked') return
    if (this.turnWrites === null) this.options.writeBatch.join(this)
    this.turnWrites = 'corked'
    raw.cork()
  }

  private flushIfFull (raw: Socket): void {
    if (this.turnWrites !== 'corked' || raw.writableLength <= CORK_FLUSH_BYTES) return
    raw.uncork()
    this.turnWrites = 'written'
  }

  /** Writes out what is corked; the next frame is this socket's first again. */
  flush (): void {
    if (this.turnWrites === 'corked') rawSocketOf(this.socket)?.uncork()
    this.turnWrites = null
  }

  /**
   * Lets go of the read buffer list ws grew for the frames read so far, if it is empty
   * (lib/transport/internals.ts: 152 B per client that ever sent a frame or pong). Call it
   * after a frame or pong has been read.
   */
  releaseReadBuffer (): void {
    releaseReadBuffers(this.socket)
  }

  /**
   * Closes with a code. A client that stopped reading would never see the close frame
   * behind its full buffer, so the socket is cut shortly after if it is still open.
   */
  close (code: number, reason: string): void {
    if (this.closing) return
    this.closing = true
    this.flush() // what was sent before the close goes before the close frame
    try {
      this.socket.close(code, closeReason(reason))
    } catch {
      this.socket.terminate()
      return
    }
    setTimeout(() => { if (this.socket.readyState !== 3) this.socket.terminate() }, 2000).unref()
  }

  get isClosing (): boolean {
    return this.closing
  }

  /** Open and not being closed by us: frames may go out, and the client's frames are still answered. */
  get isOpen (): boolean {
    return !this.closing && this.socket.readyState === 1
  }
}

/** A replay's frames' payloads: at least its bytes, enough to refuse one that cannot fit before writing any. */
function replayBytes (events: readonly EncodedEvent[]): number {
  let bytes = 0
  for (const event of events) bytes += event.wsFrameBytes.length
  return bytes
}
