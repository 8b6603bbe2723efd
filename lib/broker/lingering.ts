import { monotonicMs } from '../core/clock.js'

/**
 * Channels that stay subscribed in Redis for a while after their last local subscriber left,
 * so that a client who comes back (a reconnect, a page reload) finds its channels still held:
 * no SUBSCRIBE, no history read from Redis, its resume answered from what this instance
 * delivered (docs/operations.md, "Channels linger after their last subscriber").
 *
 * Bounded both ways: a channel lingers at most `ms`, and at most `limit` channels linger at
 * once; past that the one that has lingered longest is released at once, so clients that
 * subscribe to channel after channel and leave them cannot grow this set (docs/protocol.md,
 * "Limits": a channel costs nothing once nobody holds it).
 *
 * Every linger lasts the same, so the order channels started lingering in is the order they
 * end in: one timer, for the oldest, rather than one per channel (a reconnect storm starts
 * thousands at once).
 */
export class Lingering {
  /** Channel → when it started lingering (monotonicMs), oldest first. */
  private readonly since = new Map<string, number>()
  private timer: NodeJS.Timeout | undefined

  constructor (
    private readonly ms: number,
    private readonly limit: number,
    private readonly release: (channel: string) => void,
    private readonly now: () => number = monotonicMs
  ) {}

  get size (): number {
    return this.since.size
  }

  has (channel: string): boolean {
    return this.since.has(channel)
  }

  /** The channel's last local subscriber left: it lingers (a channel already lingering keeps its start). */
  start (channel: string): void {
    if (this.since.has(channel)) return
    if (this.limit <= 0) return this.release(channel)
    while (this.since.size >= this.limit) this.releaseOldest()
    this.since.set(channel, this.now())
    this.timer ??= this.schedule(this.ms)
  }

  /** A subscriber came back: true if the channel was lingering (it is held still, and no longer lingers). */
  cancel (channel: string): boolean {
    return this.since.delete(channel)
  }

  /** Forgets every lingering channel without releasing any (the broker is closing). */
  clear (): void {
    this.since.clear()
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
  }

  private releaseOldest (): void {
    const oldest = this.since.keys().next().value as string
    this.since.delete(oldest)
    this.release(oldest)
  }

  private schedule (delayMs: number): NodeJS.Timeout {
    const timer = setTimeout(this.expire, Math.max(0, delayMs))
    timer.unref()
    return timer
  }

  private readonly expire = (): void => {
    this.timer = undefined
    const now = this.now()
    for (const [channel, startedAt] of this.since) {
      const left = startedAt + this.ms - now
      if (left > 0) {
        this.timer = this.schedule(left)
        return
      }
      this.since.delete(channel)
      this.release(channel)
    }
  }
}
