/** Where a channel's stream stands: the offset of its last event and the epoch it counts in. */
export interface StreamPosition {
  offset: number
  epoch: string
}

/** What an ingress asks to publish. */
export interface EventDraft {
  channel: string
  type: string
  payload: Record<string, unknown>
  /**
   * Makes the publish idempotent (docs/protocol.md, "Idempotent publishing"): a draft with
   * the same key for the same channel within IDEMPOTENCY_TTL_SECONDS is not published again;
   * the broker answers the first one's event, marked `replayed`. Checked in the same atomic
   * step as the publish: the caller, its Idempotency-Key and the draft's index.
   */
  dedupe?: string
  /**
   * Where the draft comes from in an ordered source (a Kafka partition): published at most
   * once per origin within IDEMPOTENCY_TTL_SECONDS, checked against the source's high-water
   * mark in the same atomic step as the publish, so a message read again (a restart, a
   * rebalance before its commit) publishes nothing new. A source's drafts are published in
   * (offset, index) order.
   */
  origin?: DraftOrigin
  /**
   * `JSON.stringify(payload)`, when the ingress has it already: checkDrafts
   * (lib/ingress/publish-limits.ts) encodes every payload to measure it and leaves the text
   * here, so the broker's stored entry and the transports' frames reuse it rather than
   * encode the payload again (an order's payload goes to three channels). Never kept with a
   * published event.
   */
  payloadJson?: string
}

export interface DraftOrigin {
  /** The ordered source, e.g. `<topic>:<partition>`. */
  source: string
  /** The message's place in it (a Kafka offset) and the draft's index among the message's. */
  offset: number
  index: number
  /**
   * Where the source ends now (a Kafka partition's high watermark, when the batch was
   * fetched). A high-water mark at or past it was left by a log that is gone (the topic
   * deleted and created again, or truncated): it is not held against this source's drafts,
   * whose offsets count again from where the new log starts — once the source's reader
   * has confirmed it (SourceMovedError, lib/broker/broker.ts): such a mark is also what a
   * reader paused past its group's session finds, another one having published past it.
   */
  logEnd?: number
  /**
   * Marks a broker found past `logEnd` (SourceMovedError.marks) and the reader has since
   * confirmed were left by a log that is gone (it still owns the source): each is set
   * aside, if it still reads as it did then; if not (another reader moved it meanwhile),
   * the publish fails again with SourceMovedError.
   */
  movedMarks?: MovedMarks
}

/** A source's marks as a broker read them (its own name for each, and what it read): see DraftOrigin.movedMarks. */
export type MovedMarks = ReadonlyMap<string, string>

/** An event as the broker stored and fanned it out: the draft plus its place in the channel. */
export interface PublishedEvent extends EventDraft {
  offset: number
  epoch: string
  /** ISO-8601 time the broker accepted it. */
  ts: string
  /** Only on what a publish returns: its dedupe key had been seen, so this is the first one's event and nothing was published. */
  replayed?: true
}

/**
 * A string JSON.stringify writes as itself between quotes: none of `"`, `\`, a control
 * character (below U+0020), or a surrogate (it escapes a lone one; a pair goes through it too).
 */
const WRITTEN_AS_IS_IN_JSON = /^[\u0020\u0021\u0023-\u005b\u005d-\ud7ff\ue000-\uffff]*$/

/**
 * `JSON.stringify(text)` for a string. Channel names, event types and times almost never
 * hold a character it escapes, and then the quotes alone are the same text without a call
 * into the engine for each: three per frame were about a quarter of building it
 * (bench/README.md, "Session 34").
 */
export function jsonString (text: string): string {
  return WRITTEN_AS_IS_IN_JSON.test(text) ? `"${text}"` : JSON.stringify(text)
}

/**
 * A published event with its wire encodings computed lazily, at most once each,
 * however many connections receive it (STYLE: serialize once per transport).
 * The frames are written around the payload's JSON, which is encoded at most once for
 * both, or taken as given (`payloadJson`: the broker had it at hand, from the ingress or
 * from the entry Redis delivered): the same text JSON.stringify gives of the whole frame.
 */
export class EncodedEvent {
  private wsFrame?: string
  private wsBuffer?: Buffer
  private wsWire?: Buffer
  private sseData?: string

  /**
   * `payloadJson`, when given, must be `JSON.stringify(event.payload)`. `longLived`: the
   * encoding outlives the turn (sharedEncodingOf), so its bytes get memory of their own
   * rather than a slice of Node's shared 8 KB pool, which a slice kept would keep whole.
   */
  constructor (readonly event: PublishedEvent, private payloadJson?: string, private readonly longLived = false) {}

  /** The WebSocket frame of docs/protocol.md, WebSocket. */
  get ws (): string {
    if (this.wsFrame === undefined) this.wsFrame = this.wsText()
    return this.wsFrame
  }

  private wsText (): string {
    const e = this.event
    return `{"type":${jsonString(e.type)},"channel":${jsonString(e.channel)},"offset":${e.offset},"payload":${this.payload()},"ts":${jsonString(e.ts)}}`
  }

  /**
   * The same frame as UTF-8 bytes. Sockets get this one Buffer: handed a string, `ws`
   * would encode it again for every connection.
   */
  get wsBytes (): Buffer {
    // A view into the whole frame when that was made first (or, long-lived, made now): no second copy of the bytes.
    if (this.wsBuffer === undefined) {
      const wire = this.longLived ? this.wsFrameBytes : this.wsWire
      this.wsBuffer = wire === undefined ? Buffer.from(this.ws) : wire.subarray(frameHeaderLength(wire))
    }
    return this.wsBuffer
  }

  /**
   * The whole WebSocket text frame around wsBytes, header included: what a socket with
   * no extension (no compression) is handed as is, with no framing of its own.
   */
  get wsFrameBytes (): Buffer {
    // Encoded straight into the frame (one allocation, no copy), unless the bytes exist already.
    // A long-lived encoding keeps the bytes only, not the text as well.
    if (this.wsWire === undefined) {
      this.wsWire = this.wsBuffer !== undefined
        ? textFrame(this.wsBuffer)
        : this.longLived ? textFrameOf(this.wsFrame ?? this.wsText(), true) : textFrameOf(this.ws)
    }
    return this.wsWire
  }

  /** The `data:` JSON of the SSE event of docs/protocol.md, Server-Sent Events (the `id:` line is per stream). */
  get sse (): string {
    if (this.sseData === undefined) {
      const e = this.event
      this.sseData = `{"channel":${jsonString(e.channel)},"offset":${e.offset},"payload":${this.payload()},"ts":${jsonString(e.ts)}}`
    }
    return this.sseData
  }

  private payload (): string {
    if (this.payloadJson === undefined) this.payloadJson = JSON.stringify(this.event.payload)
    return this.payloadJson
  }
}

/** The encodings of event objects that reach connections one by one, not in one fan-out. */
const sharedEncodings = new WeakMap<PublishedEvent, EncodedEvent>()

/**
 * The one EncodedEvent of an event object that connections are sent apart rather than in one
 * fan-out: a replay from history, where the broker hands every reader the same objects (the
 * memory broker's history, the events the Redis broker keeps: lib/broker/recent-entries.ts).
 * Each frame is then built once for all of a reconnect storm's clients, or a product page's
 * every `rewind`, not once per reader. `payloadJson` as for EncodedEvent, used if this call
 * makes the encoding. It lives as long as the event object does.
 */
export function sharedEncodingOf (event: PublishedEvent, payloadJson?: string): EncodedEvent {
  let encoded = sharedEncodings.get(event)
  if (encoded === undefined) sharedEncodings.set(event, encoded = new EncodedEvent(event, payloadJson, true))
  return encoded
}

/** An unmasked, single-fragment WebSocket text frame around `payload` (RFC 6455 §5.2). */
export function textFrame (payload: Buffer): Buffer {
  const frame = frameWithHeader(payload.length)
  payload.copy(frame, frame.length - payload.length)
  return frame
}

/**
 * The same frame around `text`, UTF-8-encoded straight into it. `ownMemory`: not a slice of
 * Node's shared pool (for a frame kept long: a kept slice keeps its whole 8 KB pool).
 */
export function textFrameOf (text: string, ownMemory = false): Buffer {
  const length = Buffer.byteLength(text)
  const frame = frameWithHeader(length, ownMemory)
  frame.write(text, frame.length - length)
  return frame
}

/** How long the header of `frame` (one of ours: unmasked) is. */
function frameHeaderLength (frame: Buffer): number {
  return frame[1] < 126 ? 2 : frame[1] === 126 ? 4 : 10
}

/** A frame of `length` payload bytes with its header written, the payload still to fill. */
function frameWithHeader (length: number, ownMemory = false): Buffer {
  const headerLength = length < 126 ? 2 : length < 65_536 ? 4 : 10
  const frame = ownMemory ? Buffer.allocUnsafeSlow(headerLength + length) : Buffer.allocUnsafe(headerLength + length)
  frame[0] = 0x81 // FIN, opcode 1 (text)
  if (length < 126) {
    frame[1] = length
  } else if (length < 65_536) {
    frame[1] = 126
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = 127
    frame.writeBigUInt64BE(BigInt(length), 2)
  }
  return frame
}
