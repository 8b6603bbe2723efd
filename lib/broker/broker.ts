import type { EventDraft, MovedMarks, PublishedEvent, StreamPosition } from '../core/event.js'
import type { PresenceBackend } from '../core/presence.js'
import type { ControlBackend } from './control.js'
import { HistoryPolicy } from './history-policy.js'

/** A position a client claims to have seen; without an epoch it is read in the current one. */
export interface SincePosition {
  offset: number
  epoch?: string
}

export interface HistoryResult {
  /** Events after `since`, in offset order; empty when `recovered` is false. */
  events: PublishedEvent[]
  /** The channel's position when the history was read. */
  position: StreamPosition
  /**
   * True when `events` is every event after `since`: the history still holds them and
   * the epoch matches. False means the client must reload its state.
   */
  recovered: boolean
}

/**
 * Bytes of history a read took from the store (a Redis read's entries, shared out among the
 * readers it answered), by the answer: none when memory answered. What a user's reads cost
 * Redis (lib/transport/history-read-budget.ts). Kept beside the answer rather than in it,
 * so an answer is still just what it holds.
 */
const storeBytes = new WeakMap<HistoryResult, number>()

/** Notes what the store sent for this answer. */
export function tookFromStore (result: HistoryResult, bytes: number): HistoryResult {
  if (bytes > 0) storeBytes.set(result, bytes)
  return result
}

export const storeBytesOf = (result: HistoryResult): number => storeBytes.get(result) ?? 0

/** How a history read may be answered. */
export interface ReadOptions {
  /**
   * A subscriber's read (the hub's): for a channel this instance holds, it may be answered
   * from what delivery brought, its position where delivery stands (an event published an
   * instant before may still be on its way, and then follows live). Without it the position
   * is the store's (an HTTP reader sees what it just published).
   */
  fromDelivery?: boolean
}

/**
 * Hands a published event to the hub. `payloadJson`, when the broker has it at hand, is
 * `JSON.stringify(event.payload)`: the frames are built around it (EncodedEvent).
 */
export type DeliverFn = (event: PublishedEvent, payloadJson?: string) => void

/**
 * A subscribed channel's stream restarted, or skipped events that can no longer be
 * delivered: its next events count on from `position` (often in a new epoch). Live
 * subscribers must be told before those events (docs/protocol.md, Positions: `system:reset`).
 */
export type ResetFn = (channel: string, position: StreamPosition) => void

/**
 * The broker carries events between ingress and every instance's hub.
 *
 * Contract, for every implementation:
 * - Offsets: `publish` assigns the channel's next offset, starting at 1 and growing by
 *   exactly one per event within an epoch, whichever instance published it.
 * - Epoch: an opaque string naming the life of a channel's stream. It changes when the
 *   broker can no longer vouch for the offsets it handed out before (history lost,
 *   counter reset); offsets of different epochs are not comparable.
 * - Ordering: the deliver callback of every instance subscribed to a channel sees that
 *   channel's events in offset order, each once, each the successor of the one before,
 *   or else `reset` is called first with the position the next event counts on from: a
 *   subscriber never sees an offset repeat, go back, or jump without being told.
 * - A channel nobody published to holds no state (lib/broker/epochs.ts): subscribing and
 *   leaving, or reading its position, leaves nothing behind once it has no subscriber.
 * - History: the last `size` events of a channel are kept for `ttlSeconds` after the
 *   channel's latest publish, per the channel's HistoryPolicy; older ones may be trimmed.
 * - `publish` resolves once the event is in history and handed to fan-out, and rejects
 *   (never resolves silently) when it could not be: the caller then reports failure.
 * - `subscribe(channel)` resolves once events published afterwards will reach `deliver`.
 *   The hub calls it on a channel's first local subscriber and `unsubscribe` on its last.
 * - For a subscribed channel, `history` resolves only once every event up to the position
 *   it returns has been handed to `deliver`, so the hub can tell replayed events from live
 *   ones by offset (a networked broker may receive an event after a read that counted it).
 */
export interface Broker {
  /** Human-readable backend name for logs, stats and readiness ("memory", "redis"). */
  readonly kind: string
  /** Publishes one draft; one with a `dedupe` key seen before answers the first event, `replayed`. */
  publish(draft: EventDraft): Promise<PublishedEvent>
  /**
   * Publishes the drafts in the order given, as that many `publish` calls made one after
   * another would (same offsets, history and delivery), and resolves with their events in
   * that order. One call for all of them: the memory broker takes them in one go, Redis in
   * one script run (one round trip, no other command in between). All or nothing: when it
   * rejects, none of the drafts was taken, or, when only the reply was lost, all of them;
   * never a part (save a Redis that fails in the middle of a script, as when out of
   * memory), so the caller may publish the same drafts again and keep their order.
   * This is the call an ingress uses for many events (lib/ingress/publisher.ts publishAll).
   *
   * With `claim` (an HTTP caller's Idempotency-Key), the claim's scope is taken for its
   * fingerprint in the same step, before anything is published (memory: synchronously; one
   * Redis: inside the publish call; a cluster: just before it, since the claim's key lives
   * in a slot of its own). Taken by another fingerprint: rejects with
   * IdempotencyConflictError and publishes nothing. Taken by the same one (a repeat, or a
   * request whose gateway died before answering): published as usual, the drafts' dedupe
   * keys deciding what is new. The claim lasts the broker's idempotency TTL.
   *
   * Drafts with an origin whose source's mark is past their log end: rejects with
   * SourceMovedError, publishing nothing (see there and DraftOrigin.movedMarks).
   */
  publishBatch(drafts: readonly EventDraft[], claim?: IdempotencyClaim): Promise<PublishedEvent[]>
  /**
   * Most drafts worth handing to one publishBatch call, when the backend wants smaller
   * calls (Redis: a script holds Redis for as long as it runs). Unset: the caller decides.
   */
  readonly maxBatchSize?: number
  subscribe(channel: string): Promise<void>
  unsubscribe(channel: string): Promise<void>
  /** The channel's last offset (0 when none yet) and epoch. */
  position(channel: string): Promise<StreamPosition>
  /** Events after `since`; see HistoryResult. Without `since`, only the position. */
  history(channel: string, since?: SincePosition, options?: ReadOptions): Promise<HistoryResult>
  /**
   * The channel's last `count` events still held (fewer when it holds fewer), oldest first,
   * and its position; `recovered` is true. Same delivery guarantee as `history`.
   */
  recent(channel: string, count: number, options?: ReadOptions): Promise<HistoryResult>
  /** True while the backend is reachable (readiness). */
  isReady(): boolean
  /**
   * What readiness asks beyond isReady, when a backend must be asked (a Redis Cluster:
   * every master answers and serves its slots). Absent: isReady says it all.
   */
  servesAll?(): Promise<boolean>
  /** How presence shares travel between instances (lib/core/presence.ts); absent with one instance. */
  readonly presence?: PresenceBackend
  /** Disconnects and revocations to every instance (lib/broker/control.ts). */
  readonly control: ControlBackend
  close(): Promise<void>
}

export interface BrokerOptions {
  /** Called for every event of every subscribed channel, in offset order per channel. */
  deliver: DeliverFn
  /** Called when a subscribed channel's stream restarts or skips (see ResetFn). */
  reset?: ResetFn
  /** What a channel keeps when `policy` names nothing else for it (HISTORY_SIZE, HISTORY_TTL_SECONDS). */
  historySize: number
  historyTtlSeconds: number
  /** Per channel prefix (HISTORY_POLICY); defaults to historySize/historyTtlSeconds for every channel. */
  policy?: HistoryPolicy
  /** How long a draft's dedupe key is remembered (IDEMPOTENCY_TTL_SECONDS); default 300. */
  idempotencyTtlSeconds?: number
}

export const DEFAULT_IDEMPOTENCY_TTL_SECONDS = 300

/** The policy a broker applies: the given one, or the defaults for every channel. */
export const policyOf = (options: BrokerOptions): HistoryPolicy =>
  options.policy ?? new HistoryPolicy({ size: options.historySize, ttlSeconds: options.historyTtlSeconds })

/** An HTTP caller's Idempotency-Key (lib/ingress/idempotency.ts), claimed by the request with this fingerprint. */
export interface IdempotencyClaim {
  scope: string
  fingerprint: string
}

/** The claim's scope is taken by a request with another fingerprint: nothing was published (HTTP 422). */
export class IdempotencyConflictError extends Error {
  readonly statusCode = 422
  constructor () {
    super('Idempotency-Key: already used with a different request')
    this.name = 'IdempotencyConflictError'
  }
}

/**
 * A source's mark is at or past where the drafts' log ends (DraftOrigin.logEnd): the log
 * is gone (a topic deleted and created again), or another reader took the source over and
 * published past this batch while its reader was paused (a frozen process, past its
 * group's session). Only the reader can tell which: it publishes the same drafts again
 * with `movedMarks` once it has confirmed it still owns the source, and gives the batch up
 * otherwise. Nothing of a step that found one was published (on a Redis Cluster, other
 * slots' steps may have been: publishing the drafts again skips what they took).
 */
export class SourceMovedError extends Error {
  constructor (readonly marks: MovedMarks) {
    super('a source\'s mark is past where its log ends now: another reader went past this batch, or the log is gone')
    this.name = 'SourceMovedError'
  }
}

/** Thrown by a broker when its backend cannot take a publish right now (HTTP 503). */
export class BrokerUnavailableError extends Error {
  /**
   * True when the command had left for the backend and no answer came (a timeout, the
   * connection lost under it): a publish may still be taken, as when a hung Redis wakes and
   * runs what waited in its socket. False: refused before anything was sent.
   */
  readonly mayHaveBeenTaken: boolean
  constructor (message: string, options?: { cause?: unknown, mayHaveBeenTaken?: boolean }) {
    super(message, options)
    this.name = 'BrokerUnavailableError'
    this.mayHaveBeenTaken = options?.mayHaveBeenTaken ?? false
  }
}
