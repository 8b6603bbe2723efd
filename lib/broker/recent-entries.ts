import type { StreamPosition } from '../core/event.js'

/** What one entry costs besides its characters (the record, its place in two queues): an estimate. */
const ENTRY_OVERHEAD_BYTES = 64

/** An entry read once and not kept decoded: the next read of it keeps it (EntryDecoder). */
const READ_ONCE = Symbol('read once')

/**
 * How RecentEntries turns its raw entries into what readers get (`after`), and what keeping
 * one decoded costs besides its characters (counted in the budget while it is kept).
 */
export interface EntryDecoder<T> {
  decode: (channel: string, entry: string) => T
  keptBytes: (entry: string) => number
}

interface Entry {
  tail: Tail<unknown>
  /** The tail's generation when it was appended: a reset tail's old entries are dead. */
  generation: number
  /** Its place in the tail: the n-th appended in this generation. */
  seq: number
}

interface Tail<T> {
  generation: number
  epoch: string
  /** The offset just before the first entry held. */
  base: number
  entries: string[]
  /** Beside each of `entries`: nothing yet, READ_ONCE, or its decoded form, kept. */
  decoded: Array<T | typeof READ_ONCE | undefined>
  /** Index of the first entry held in `entries` (dropped ones are cut off in batches). */
  head: number
  /** Entries appended in this generation, and how many of them were dropped from the head. */
  appended: number
  dropped: number
  bytes: number
  /** Date.now() of the last append: the history key in Redis expires this long after the channel's last publish. */
  appendedAt: number
  /** The channel's lifetimeOf, asked once (a channel's policy does not change). */
  lifetimeMs: number
}

/** What RecentEntries holds of a channel: entries `base + 1` to `base + count`, in `epoch`. */
export interface RecentView {
  epoch: string
  /** The offset just before the first entry held. */
  base: number
  count: number
  /** When the last entry was appended (Date.now()). */
  appendedAt: number
}

/**
 * The last entries of each channel this instance holds, as live delivery brought them, so a
 * resume or a `rewind` of a held channel can be answered without a Redis read (a reconnect
 * storm reads every shared channel once per client; a product page's `rewind: 1` reads its
 * channel once per view). Kept per channel in offset order with no hole: an entry that
 * does not follow the last one starts the tail again from it.
 *
 * An entry read a second time is kept decoded from then on, so every later reader gets the
 * same object (and the same frames: sharedEncodingOf, lib/core/event.ts) rather than
 * decoding it and framing it again; an entry read once (a user's own channel, resumed by
 * that user alone) is not kept so.
 *
 * Bounded twice: per channel by its history size (never more than Redis keeps), and over
 * all channels by `budgetBytes`, decoded forms included (the oldest entries of all go
 * first). A channel's entries go when it is forgotten (no local subscriber left), so an
 * idle channel costs nothing.
 */
export class RecentEntries<T> {
  private readonly tails = new Map<string, Tail<T>>()
  /** Every entry in append order, over all channels: the budget drops from here. */
  private queue: Entry[] = []
  private queueHead = 0
  private liveEntries = 0
  private bytes = 0

  constructor (
    private readonly budgetBytes: number,
    private readonly capacityOf: (channel: string) => number,
    private readonly decoder: EntryDecoder<T>,
    /**
     * How long the store keeps a channel's entries after its last one (its history TTL, less
     * a margin for delivery): entries held from before such a silence are gone from the store
     * when the next one comes, so they go here too (audit, session 26: a rewind answered from
     * here had events the history route and a fresh instance no longer had).
     */
    private readonly lifetimeOf: (channel: string) => number = () => Infinity,
    private readonly now: () => number = Date.now
  ) {}

  /** The channel now stands at `position` with nothing recent known before it. */
  reset (channel: string, position: StreamPosition): void {
    if (this.budgetBytes <= 0) return
    const tail = this.tails.get(channel)
    if (tail === undefined) {
      this.tails.set(channel, newTail(position, this.lifetimeOf(channel)))
      return
    }
    this.clear(tail)
    tail.generation++
    tail.epoch = position.epoch
    tail.base = position.offset
    tail.appendedAt = 0
  }

  /**
   * The channel's last entries as a read from the store brought them, `entries` ending at
   * `position`, in place of what was held; `publishedAt` is when the last one was published.
   */
  seed (channel: string, position: StreamPosition, entries: readonly string[], publishedAt: number): void {
    this.reset(channel, { epoch: position.epoch, offset: position.offset - entries.length })
    entries.forEach((entry, i) => this.append(channel, { epoch: position.epoch, offset: position.offset - entries.length + i + 1 }, entry, publishedAt))
  }

  /** The entry at `position` was delivered; one that does not follow the last, or comes after the last's lifetime, starts the tail again. */
  append (channel: string, position: StreamPosition, entry: string, appendedAt = this.now()): void {
    if (this.budgetBytes <= 0) return
    const capacity = this.capacityOf(channel)
    let tail = this.tails.get(channel)
    const expired = tail !== undefined && tail.appendedAt > 0 && appendedAt - tail.appendedAt >= tail.lifetimeMs
    if (tail === undefined || expired || tail.epoch !== position.epoch || tail.base + tail.entries.length - tail.head !== position.offset - 1) {
      this.reset(channel, { epoch: position.epoch, offset: position.offset - 1 })
      tail = this.tails.get(channel) as Tail<T>
    }
    if (capacity <= 0) {
      tail.base = position.offset
      return
    }
    const bytes = entry.length + ENTRY_OVERHEAD_BYTES
    tail.entries.push(entry)
    tail.decoded.push(undefined)
    tail.bytes += bytes
    tail.appendedAt = appendedAt
    this.queue.push({ tail, generation: tail.generation, seq: tail.appended++ })
    this.liveEntries++
    this.bytes += bytes
    while (tail.entries.length - tail.head > capacity) this.dropHead(tail)
    this.keepWithinBudget()
    this.compactQueue()
  }

  forget (channel: string): void {
    const tail = this.tails.get(channel)
    if (tail === undefined) return
    this.clear(tail)
    tail.generation++
    this.tails.delete(channel)
  }

  get enabled (): boolean {
    return this.budgetBytes > 0
  }

  /** What is held of the channel, undefined for a channel not seen. */
  view (channel: string): RecentView | undefined {
    const tail = this.tails.get(channel)
    if (tail === undefined) return undefined
    return { epoch: tail.epoch, base: tail.base, count: tail.entries.length - tail.head, appendedAt: tail.appendedAt }
  }

  /** The entries held after `offset` (in the view's range), oldest first, decoded. */
  after (channel: string, offset: number): T[] {
    const tail = this.tails.get(channel)
    if (tail === undefined) return []
    const out: T[] = []
    let kept = 0
    for (let i = tail.head + Math.max(0, offset - tail.base); i < tail.entries.length; i++) {
      const held = tail.decoded[i]
      if (held !== undefined && held !== READ_ONCE) {
        out.push(held)
        continue
      }
      const decoded = this.decoder.decode(channel, tail.entries[i])
      out.push(decoded)
      if (held === undefined) {
        tail.decoded[i] = READ_ONCE
      } else {
        tail.decoded[i] = decoded
        kept += this.decoder.keptBytes(tail.entries[i])
      }
    }
    if (kept > 0) {
      tail.bytes += kept
      this.bytes += kept
      this.keepWithinBudget()
    }
    return out
  }

  /** Bytes held (estimated), entries, channels, and records in the eviction queue (live or dead), for tests. */
  size (): { bytes: number, entries: number, channels: number, queued: number } {
    return { bytes: this.bytes, entries: this.liveEntries, channels: this.tails.size, queued: this.queue.length - this.queueHead }
  }

  private entryBytes (tail: Tail<T>, index: number): number {
    const entry = tail.entries[index]
    const held = tail.decoded[index]
    return entry.length + ENTRY_OVERHEAD_BYTES + (held !== undefined && held !== READ_ONCE ? this.decoder.keptBytes(entry) : 0)
  }

  private dropHead (tail: Tail<T>): void {
    const bytes = this.entryBytes(tail, tail.head)
    tail.entries[tail.head] = ''
    tail.decoded[tail.head] = undefined
    tail.head++
    tail.base++
    tail.dropped++
    tail.bytes -= bytes
    this.bytes -= bytes
    this.liveEntries--
    if (tail.head >= 64 && tail.head * 2 >= tail.entries.length) {
      tail.entries = tail.entries.slice(tail.head)
      tail.decoded = tail.decoded.slice(tail.head)
      tail.head = 0
    }
  }

  private keepWithinBudget (): void {
    while (this.bytes > this.budgetBytes && this.queueHead < this.queue.length) this.evictOldest()
  }

  /** Drops the oldest entry still held anywhere (dead ones, of reset tails or dropped by capacity, are skipped). */
  private evictOldest (): void {
    while (this.queueHead < this.queue.length) {
      const oldest = this.queue[this.queueHead++]
      const tail = oldest.tail as Tail<T>
      if (oldest.generation === tail.generation && oldest.seq === tail.dropped && tail.head < tail.entries.length) {
        this.dropHead(tail)
        return
      }
    }
  }

  private clear (tail: Tail<T>): void {
    this.bytes -= tail.bytes
    this.liveEntries -= tail.entries.length - tail.head
    tail.entries = []
    tail.decoded = []
    tail.head = 0
    tail.bytes = 0
    tail.appended = 0
    tail.dropped = 0
  }

  /** Drops the queue's consumed and dead records once they outnumber the live ones. */
  private compactQueue (): void {
    const held = this.queue.length - this.queueHead
    if (held < 1024 || held < 2 * this.liveEntries) return
    this.queue = this.queue.slice(this.queueHead).filter((e) => e.generation === e.tail.generation && e.seq >= e.tail.dropped)
    this.queueHead = 0
  }
}

function newTail<T> (position: StreamPosition, lifetimeMs: number): Tail<T> {
  return { generation: 0, epoch: position.epoch, base: position.offset, entries: [], decoded: [], head: 0, appended: 0, dropped: 0, bytes: 0, appendedAt: 0, lifetimeMs }
}
