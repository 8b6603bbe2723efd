import { type HistoryResult, type SincePosition, tookFromStore } from './broker.js'
import type { PublishedEvent } from '../core/event.js'
import { recoverFrom } from './recovery.js'

/** One read as READ_SCRIPT takes it: `since` -1 for none, `last` 0 for none. */
export interface ReadCall {
  channel: string
  since: number
  epoch: string
  last: number
}

/** READ_SCRIPT's reply: epoch, offset, then the entries (redis-layout.ts). */
export type ReadReply = [string, number | string, ...string[]]

/**
 * Runs the calls and answers each, in order, with its reply or the error it got. One
 * round trip for all of them where the backend can (one socket write on one Redis).
 */
export type RunReads = (calls: readonly ReadCall[]) => Promise<Array<ReadReply | Error>>

interface Waiter {
  since?: SincePosition
  last: number
  resolve(result: HistoryResult): void
  reject(err: unknown): void
}

interface Group {
  call: ReadCall
  waiters: Waiter[]
}

/**
 * The history reads a turn of the event loop asks for, sent together at its end.
 *
 * Why: in a reconnect storm every resuming client reads each of its channels, and a Redis
 * command each was a socket write each (most of the gateway's Redis time in the storm's
 * profile, bench/README.md "Reconnect storm"), with every client of a shared channel reading
 * the same tail. So the turn's reads go out together (one write), and reads of one channel in one
 * epoch share one script run: the one from the lowest `since` (or for the most `last`
 * events) answers each of them, cut to what each asked. Each answer is exactly what its own
 * read would have been at that moment: positions are read at the same instant, and
 * `recoverFrom` decides per reader (a reader whose events are still held is recovered even
 * when an older one's are trimmed).
 *
 * The cost is latency of at most one turn (setImmediate) on a read.
 */
export class ReadBatch {
  private groups = new Map<string, Group>()
  private scheduled = false

  constructor (
    private readonly run: RunReads,
    private readonly decode: (channel: string, entry: string) => PublishedEvent
  ) {}

  read (channel: string, since: SincePosition | undefined, last: number): Promise<HistoryResult> {
    return new Promise((resolve, reject) => {
      // A negative `since` (never sent by our callers) reads no entries: it must not share a run.
      const kind = since !== undefined ? (since.offset >= 0 ? 's' : 'x') : last > 0 ? 'l' : 'p'
      const epoch = since?.epoch ?? ''
      const key = `${kind}${epoch}\n${channel}`
      const waiter: Waiter = { since, last, resolve, reject }
      const group = this.groups.get(key)
      if (group === undefined) {
        this.groups.set(key, { call: { channel, since: since?.offset ?? -1, epoch, last }, waiters: [waiter] })
      } else {
        group.waiters.push(waiter)
        if (since !== undefined) group.call.since = Math.min(group.call.since, since.offset)
        group.call.last = Math.max(group.call.last, last)
      }
      if (!this.scheduled) {
        this.scheduled = true
        setImmediate(this.flush)
      }
    })
  }

  private readonly flush = (): void => {
    this.scheduled = false
    const groups = [...this.groups.values()]
    this.groups = new Map()
    this.run(groups.map((g) => g.call)).then((replies) => {
      groups.forEach((group, i) => this.answer(group, replies[i]))
    }, (err: unknown) => {
      for (const group of groups) for (const waiter of group.waiters) waiter.reject(err)
    })
  }

  private answer (group: Group, reply: ReadReply | Error | undefined): void {
    if (reply === undefined || reply instanceof Error) {
      for (const waiter of group.waiters) waiter.reject(reply ?? new Error('no reply to a history read'))
      return
    }
    let events: PublishedEvent[]
    let position
    let bytes = 0
    try {
      const [epoch, offset, ...entries] = reply
      position = { offset: Number(offset), epoch }
      for (const entry of entries) bytes += entry.length
      events = entries.map((entry) => this.decode(group.call.channel, entry)).filter((e) => e.epoch === epoch)
    } catch (err) {
      for (const waiter of group.waiters) waiter.reject(err)
      return
    }
    // What the read brought back, shared among the readers it answered.
    const storeBytes = Math.ceil(bytes / group.waiters.length)
    for (const waiter of group.waiters) {
      if (waiter.since !== undefined) waiter.resolve(tookFromStore(recoverFrom(waiter.since, position, events), storeBytes))
      else waiter.resolve(tookFromStore({ events: waiter.last > 0 ? events.slice(-waiter.last) : [], position, recovered: true }, storeBytes))
    }
  }
}
