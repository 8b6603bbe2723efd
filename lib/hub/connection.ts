import { randomBytes } from 'node:crypto'
import type { EncodedEvent, StreamPosition } from '../core/event.js'
import type { EncodedPresence } from '../core/presence.js'
import { type HeldChannels, NO_CHANNELS } from './held-channels.js'
import type { Identity } from '../auth/identity.js'

export type Transport = 'ws' | 'sse'

/**
 * The hub's bookkeeping for one connection, which every Connection extends. It lives on
 * the connection itself, not in an object of the hub's per connection: idle memory per
 * connection is made of such objects. Only the hub reads or writes these fields.
 */
export abstract class HubMember {
  /** Held channels, each with the offset after which all of it was sent (lib/hub/held-channels.ts). */
  heldChannels: HeldChannels = NO_CHANNELS
  /** Live events (encoded, as the fan-out had them) and resets held back per channel while its subscription replays history. */
  pendingEvents: Map<string, Array<EncodedEvent | ChannelReset>> | null = null
}

/** A channel's stream restarted or skipped: its next events count on from `position`. */
export interface ChannelReset {
  reset: true
  channel: string
  position: StreamPosition
}

export const isReset = (item: EncodedEvent | ChannelReset): item is ChannelReset => 'reset' in item

/**
 * One client stream, whatever carries it. The hub speaks only this interface, so
 * fan-out never knows whether bytes go to a WebSocket or an SSE response.
 *
 * Implementations must not throw from `sendEvent`: a connection that cannot keep up
 * (its send buffer over the limit) closes itself and reports it through `onClose`.
 */
export interface Connection extends HubMember {
  readonly id: string
  readonly transport: Transport
  /** Replaced on `auth:refresh`; the user id never changes for a connection. */
  identity: Identity
  sendEvent(event: EncodedEvent): void
  /**
   * Sends events replayed from history (a rewind, a resume: one subscribe's, of every channel
   * it read) as sendEvent does, except that together they may go past the send buffer limit:
   * a history can be larger than the buffer. A connection already behind, or a replay larger
   * than the room it has, is cut as usual (lib/transport/replay-backlog.ts).
   */
  sendReplayed(events: readonly EncodedEvent[]): void
  /**
   * Whether `sendReplayed(events)` now would be refused for want of room that other replays
   * hold (the user's other connections', or the instance's), though the connection's own
   * bounds would take it: room that frees as they drain, so the subscribe is refused as one
   * to retry rather than acknowledged and then cut.
   */
  replayMustWait(events: readonly EncodedEvent[]): boolean
  /** Tells the client the channel's stream restarted (`system:reset`, before its next event). */
  sendReset(channel: string, position: StreamPosition): void
  /** Tells the client a channel's live counts (`presence`), encoded once for every subscriber. */
  sendPresence(presence: EncodedPresence): void
  close(code: number, reason: string): void
}

/**
 * Connection ids: a random prefix per process, so ids stay unique across instances (in
 * cluster stats and logs), and a counter. Up to 60M connections per process an id is at
 * most 12 characters, which V8 keeps as one flat 32-byte string (a UUID string was 56 B,
 * and concatenations of 13 characters or more become two-part strings).
 */
const ID_PREFIX = randomBytes(6).toString('base64url').slice(0, 6)
let lastId = 0

export const newConnectionId = (): string => `${ID_PREFIX}.${(++lastId).toString(36)}`
