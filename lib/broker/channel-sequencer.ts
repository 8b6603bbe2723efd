import type { DeliverFn, HistoryResult, ResetFn, SincePosition } from './broker.js'
import type { PublishedEvent, StreamPosition } from '../core/event.js'

interface Waiter extends StreamPosition {
  resolve(): void
}

interface Cursor {
  epoch: string
  /** The last offset handed on. */
  offset: number
  /** Live events held back while a gap is filled from history; null when not filling. */
  held: PublishedEvent[] | null
  /** The latest position the store reported for the channel: delivery is behind until it reaches it. */
  stored?: StreamPosition
  /** The last fill failed: what the store holds beyond `offset` is unknown until one succeeds. */
  unsure?: boolean
}

export interface SequencerLogger {
  warn(obj: object, msg: string): void
}

/**
 * A fill whose history read failed is tried again after each of these waits, the channel's
 * live events held meanwhile, before the gap is given up and announced by a reset: the
 * read that fails is most often the one made as the connections come back after a blip
 * (both cut at once), and the history it wanted is still there a moment later (~4 s in all).
 */
const FILL_RETRY_MS = [100, 250, 500, 1000, 2000] as const

/**
 * Keeps each subscribed channel's delivery in offset order, once each, across a lossy
 * transport (Redis pub/sub drops whatever is published while the subscriber connection
 * is down). It remembers the last offset delivered per channel, drops duplicates, and
 * when an event arrives after a gap — or `catchUp` is called after a reconnect — it reads
 * the missed events from history and delivers them before the held live ones. A gap the
 * history can no longer fill, or a stream that restarted in a new epoch (Redis lost it),
 * is never passed on silently: `reset` announces the position the next event counts on
 * from, before that event.
 */
export class ChannelSequencer {
  private readonly cursors = new Map<string, Cursor>()
  private readonly waiters = new Map<string, Waiter[]>()

  constructor (
    private readonly read: (channel: string, since: SincePosition) => Promise<HistoryResult>,
    private readonly deliver: DeliverFn,
    private readonly reset: ResetFn,
    private readonly log?: SequencerLogger,
    private readonly fillRetryMs: readonly number[] = FILL_RETRY_MS
  ) {}

  /**
   * Starts counting from `position` unless events of the channel were already seen; then a
   * store ahead of what was seen (events published before this subscription took, which
   * pub/sub will never bring) is caught up from history.
   */
  start (channel: string, position: StreamPosition): void {
    const cursor = this.cursors.get(channel)
    if (cursor === undefined) {
      this.cursors.set(channel, { ...position, held: null })
      return
    }
    this.stored(channel, position)
    if (!passed(cursor, position)) this.catchUp(channel)
  }

  /** The store reported this position for the channel (a read of it). */
  stored (channel: string, position: StreamPosition): void {
    const cursor = this.cursors.get(channel)
    if (cursor !== undefined) cursor.stored = position
  }

  /**
   * Where the channel's delivery stands when every event up to there was handed on and
   * nothing is being filled: live delivery is then the channel's stream up to this position.
   * Undefined for a channel not counted, with a gap being filled, behind the position the
   * store last reported, or whose last fill failed (the store may hold more than was seen).
   */
  settledAt (channel: string): StreamPosition | undefined {
    const cursor = this.cursors.get(channel)
    if (cursor === undefined || cursor.held !== null || cursor.unsure === true) return undefined
    if (cursor.stored !== undefined && !passed(cursor, cursor.stored)) return undefined
    return { offset: cursor.offset, epoch: cursor.epoch }
  }

  forget (channel: string): void {
    this.cursors.delete(channel)
    for (const waiter of this.waiters.get(channel) ?? []) waiter.resolve()
    this.waiters.delete(channel)
  }

  /**
   * Resolves once every event of the channel up to `position` was handed on, so a
   * history read and the live delivery agree on where one ends and the other begins.
   * Pub/sub gets `graceMs` to bring what is in flight; then the rest is read from
   * history. Never hangs: it gives up (and logs) after a few more seconds.
   */
  async reached (channel: string, position: StreamPosition, graceMs: number): Promise<void> {
    const cursor = this.cursors.get(channel)
    if (cursor === undefined || position.offset === 0 || passed(cursor, position)) return
    let waiter: Waiter | undefined
    const done = new Promise<void>((resolve) => { waiter = { ...position, resolve } })
    const list = this.waiters.get(channel) ?? []
    list.push(waiter as Waiter)
    this.waiters.set(channel, list)
    if (await settlesWithin(done, graceMs)) return
    this.catchUp(channel)
    if (await settlesWithin(done, 5000)) return
    this.log?.warn({ channel, position }, 'live delivery did not reach the history position in time')
    const left = this.waiters.get(channel)?.filter((w) => w !== waiter) ?? []
    if (left.length > 0) this.waiters.set(channel, left)
    else this.waiters.delete(channel)
  }

  /** A live event, as the transport delivered it. */
  push (event: PublishedEvent): void {
    const cursor = this.cursors.get(event.channel)
    if (cursor === undefined) {
      this.cursors.set(event.channel, { epoch: event.epoch, offset: event.offset, held: null })
      this.deliver(event)
    } else if (cursor.held !== null) {
      cursor.held.push(event)
    } else if (this.isGap(cursor, event)) {
      cursor.held = [event]
      void this.fill(event.channel, cursor)
    } else {
      this.accept(cursor, event)
    }
  }

  /**
   * An event this instance published, known from the publish's own reply before its
   * pub/sub copy arrives: handed on at once when it directly follows the last event handed
   * on. Otherwise (another instance's earlier events still on their way, a gap being
   * filled, a new epoch) it is left to its pub/sub copy, which comes after every earlier
   * event of the channel: pub/sub keeps a channel's order.
   */
  pushOwn (event: PublishedEvent): void {
    const cursor = this.cursors.get(event.channel)
    if (cursor === undefined || cursor.held !== null || event.epoch !== cursor.epoch || event.offset !== cursor.offset + 1) return
    this.accept(cursor, event)
  }

  /** Whether the event at this place was handed on already: its pub/sub copy can be dropped undecoded. */
  handedOn (channel: string, epoch: string, offset: number): boolean {
    const cursor = this.cursors.get(channel)
    return cursor !== undefined && cursor.epoch === epoch && offset <= cursor.offset
  }

  /** Delivers whatever the channel got while the transport was away (after a reconnect). */
  catchUp (channel: string): void {
    const cursor = this.cursors.get(channel)
    if (cursor === undefined || cursor.held !== null) return
    cursor.held = []
    void this.fill(channel, cursor)
  }

  private async fill (channel: string, cursor: Cursor, attempt = 0): Promise<void> {
    let missed: PublishedEvent[] = []
    /** Where the store stands when history no longer holds the gap. */
    let lostTo: StreamPosition | undefined
    /** The epoch the store is in, read after the first `heldBeforeRead` held events came; undefined if it could not be read. */
    let storeEpoch: string | undefined
    const heldBeforeRead = cursor.held?.length ?? 0
    try {
      let result = await this.read(channel, { offset: cursor.offset, epoch: cursor.epoch })
      if (!result.recovered && result.position.epoch !== cursor.epoch) {
        // The stream restarted (Redis lost it): what the new epoch has so far is still news,
        // and subscribers hear of the restart now rather than at the next publish.
        result = await this.read(channel, { offset: 0, epoch: result.position.epoch })
        if (result.recovered && this.cursors.get(channel) === cursor) {
          this.restartAt(cursor, channel, { offset: 0, epoch: result.position.epoch })
        }
      }
      storeEpoch = result.position.epoch
      if (result.recovered) {
        missed = result.events
      } else {
        lostTo = result.position
        this.log?.warn({ channel, after: cursor.offset, position: result.position }, 'gap in delivery that history no longer covers')
      }
      cursor.unsure = false
    } catch (err) {
      cursor.unsure = true
      const wait = this.fillRetryMs[attempt]
      if (wait !== undefined && this.cursors.get(channel) === cursor) {
        // Still holding what came live: tried again, so what history holds is not skipped.
        setTimeout(() => { if (this.cursors.get(channel) === cursor) void this.fill(channel, cursor, attempt + 1) }, wait).unref()
        return
      }
      this.log?.warn({ err, channel, after: cursor.offset, attempts: attempt + 1 }, 'could not read history to fill a delivery gap')
    }
    if (this.cursors.get(channel) !== cursor) return
    const { believed, stale, unconfirmed } = weighHeld(cursor.held ?? [], heldBeforeRead, storeEpoch)
    cursor.held = null
    if (stale > 0) this.log?.warn({ channel, stale, storeEpoch }, 'dropped live events of an epoch the store is no longer in (a Redis node that lost its role)')
    // A gap with no live event after it (a catch-up after a reconnect, the channel quiet
    // since) is announced now, at the store's position: waiting for the next event left
    // subscribers on stale state with no word, and reads waiting on delivery hung (audit).
    if (lostTo !== undefined && believed.length === 0 && !passed(cursor, lostTo)) this.restartAt(cursor, channel, lostTo)
    for (const event of missed) this.accept(cursor, event)
    for (const event of believed) this.accept(cursor, event)
    if (unconfirmed.length > 0) {
      cursor.held = unconfirmed
      void this.fill(channel, cursor)
    }
  }

  private restartAt (cursor: Cursor, channel: string, position: StreamPosition): void {
    cursor.epoch = position.epoch
    cursor.offset = position.offset
    this.reset(channel, position)
    this.releaseWaiters(channel, cursor)
  }

  /**
   * Events were skipped in this epoch, or the event is in another one. An epoch is believed
   * only once the store is read in it (fill): a Redis master frozen past its failover runs
   * the publishes queued on its socket when it wakes, and their pub/sub copies, in its dead
   * epoch, reached subscribers after the promoted replica's first events. Taken as a restart,
   * each sent clients back to the dead epoch and then forward again, replaying the new one
   * (thousands of duplicates in a black-box audit on a cluster).
   */
  private isGap (cursor: Cursor, event: PublishedEvent): boolean {
    return event.epoch !== cursor.epoch || event.offset > cursor.offset + 1
  }

  /**
   * Hands the event on unless it was already; one that does not follow the last one (a new
   * epoch, or a gap history could not fill) is announced by a reset first.
   */
  private accept (cursor: Cursor, event: PublishedEvent): void {
    if (event.epoch === cursor.epoch && event.offset <= cursor.offset) return
    if (event.epoch !== cursor.epoch || event.offset !== cursor.offset + 1) {
      this.restartAt(cursor, event.channel, { offset: event.offset - 1, epoch: event.epoch })
    }
    cursor.epoch = event.epoch
    cursor.offset = event.offset
    this.deliver(event)
    this.releaseWaiters(event.channel, cursor)
  }

  /** Resolves the reads waiting (reached) for a position delivery has now passed. */
  private releaseWaiters (channel: string, cursor: Cursor): void {
    const waiters = this.waiters.get(channel)
    if (waiters === undefined) return
    const waiting = waiters.filter((w) => !passed(cursor, w))
    for (const w of waiters) if (!waiting.includes(w)) w.resolve()
    if (waiting.length > 0) this.waiters.set(channel, waiting)
    else this.waiters.delete(channel)
  }
}

/**
 * Sorts a fill's held live events by what the store's epoch says of them: `believed` in
 * order up to the first one still to confirm; `stale`, how many came before the read and
 * are in an epoch the store is not in (a dead node's); `unconfirmed`, from the first event
 * in another epoch that came while the read was in flight (a restart after it, or a stale
 * one) on: read again before it is believed. Without a read (`storeEpoch` undefined),
 * every event is believed.
 */
function weighHeld (held: PublishedEvent[], heldBeforeRead: number, storeEpoch: string | undefined):
{ believed: PublishedEvent[], stale: number, unconfirmed: PublishedEvent[] } {
  if (storeEpoch === undefined) return { believed: held, stale: 0, unconfirmed: [] }
  const believed: PublishedEvent[] = []
  let stale = 0
  for (const [index, event] of held.entries()) {
    if (event.epoch === storeEpoch) believed.push(event)
    else if (index < heldBeforeRead) stale++
    else return { believed, stale, unconfirmed: held.slice(index) }
  }
  return { believed, stale, unconfirmed: [] }
}

const passed = (cursor: Cursor, position: StreamPosition): boolean =>
  cursor.epoch === position.epoch && cursor.offset >= position.offset

async function settlesWithin (promise: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), ms) })
  const settled = await Promise.race([promise.then(() => true), timeout])
  clearTimeout(timer)
  return settled
}
