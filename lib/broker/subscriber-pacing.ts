/**
 * Keeps a Redis broker's publishes from outrunning its own subscriber connection.
 *
 * Every entry an instance publishes on a channel it holds comes back to it on its
 * subscriber connection. While the instance is busy (draining a Kafka backlog, say) it
 * publishes faster than it reads that connection, and the copies queue up in Redis's output
 * buffer for it; past `client-output-buffer-limit pubsub` Redis cuts the connection, and a
 * busy channel's events since then can fall beyond its history (bench/README.md, "Lost
 * events in a Kafka drain on Redis"). So a publish waits while more than `budgetBytes` of
 * this instance's entries may still be unread there.
 *
 * What is unread is measured, not guessed: a PING on the subscriber connection is answered
 * after everything Redis queued for it before, so once it is answered, every publish Redis
 * had answered when the PING was sent has been read back. What is outstanding is what was
 * published since the last such mark. Other instances' entries on the same connection are
 * not counted, but they delay the answer, so they are waited for too.
 */
export class SubscriberPacing {
  /** Bytes of entries handed to Redis (held channels only: only those come back). */
  private sent = 0
  /** Of those, bytes of publishes Redis has answered (or failed: then nothing more comes). */
  private answeredBytes = 0
  /** `answeredBytes` when the last PING that every subscriber connection answered was sent. */
  private readBack = 0
  private measuring: Promise<boolean> | undefined
  private onAnswer: Array<() => void> = []

  /**
   * @param pingSubscribers PINGs every subscriber connection; resolves true once all answered,
   * false if one is not connected or did not answer (then nothing can be measured, and
   * nothing waits: a connection that comes back starts with an empty buffer).
   * @param onWaited told how long a publish waited, when it did (a metric).
   */
  constructor (private budgetBytes: number, private readonly pingSubscribers: () => Promise<boolean>,
    private readonly onWaited?: (seconds: number) => void) {}

  setBudget (bytes: number): void {
    this.budgetBytes = bytes
  }

  get outstandingBytes (): number {
    return this.sent - this.readBack
  }

  /**
   * Call before handing Redis a publish of `bytes` that will come back: resolves when it may
   * go (at once, nearly always). A publish goes whatever its size when nothing is outstanding.
   */
  async admit (bytes: number): Promise<void> {
    // Measure ahead, so that a busy publisher finds a fresh mark when it reaches the budget.
    if (this.outstandingBytes + bytes > this.budgetBytes / 2) void this.measure()
    const waitedFrom = performance.now()
    let waited = false
    while (this.outstandingBytes > 0 && this.outstandingBytes + bytes > this.budgetBytes) {
      waited = true
      const before = this.readBack
      if (!await this.measure()) break
      // Nothing read back yet because what is outstanding is still in flight: wait for an answer.
      if (this.readBack === before && this.outstandingBytes + bytes > this.budgetBytes && this.answeredBytes < this.sent) {
        await new Promise<void>((resolve) => this.onAnswer.push(resolve))
      }
    }
    if (waited) this.onWaited?.((performance.now() - waitedFrom) / 1000)
    this.sent += bytes
  }

  /** The publish admitted with `bytes` was answered, or failed. */
  answered (bytes: number): void {
    this.answeredBytes += bytes
    const waiting = this.onAnswer
    this.onAnswer = []
    for (const resolve of waiting) resolve()
  }

  /** A subscriber connection was lost: whatever it had queued is gone with it. */
  reset (): void {
    this.readBack = this.sent
  }

  private async measure (): Promise<boolean> {
    if (this.measuring !== undefined) return await this.measuring
    const mark = this.answeredBytes
    this.measuring = this.pingSubscribers().then((ok) => {
      if (ok) this.readBack = Math.max(this.readBack, mark)
      return ok
    }, () => false).finally(() => { this.measuring = undefined })
    return await this.measuring
  }
}

/** Redis's default limit is 8 MB held for a minute: half of it, when the server's limit cannot be read. */
export const SUBSCRIBER_BUDGET_BYTES = 4 * 1024 * 1024
/** At most this much, whatever the limit: about a second of a busy drain's entries, well inside the connection probe's PING timeout. */
export const MAX_SUBSCRIBER_BUDGET_BYTES = 16 * 1024 * 1024

/**
 * The budget for a server whose pub/sub connections are cut past `hardBytes`, or past
 * `softBytes` held for `softSeconds` (0: no such limit): half the lower limit, at most
 * MAX_SUBSCRIBER_BUDGET_BYTES; SUBSCRIBER_BUDGET_BYTES when the limit is not known.
 */
export function subscriberBudget (limit: { hardBytes: number, softBytes: number, softSeconds: number } | undefined): number {
  if (limit === undefined) return SUBSCRIBER_BUDGET_BYTES
  const limits = [limit.hardBytes, limit.softSeconds > 0 ? limit.softBytes : 0].filter((bytes) => bytes > 0)
  return Math.min(MAX_SUBSCRIBER_BUDGET_BYTES, ...limits.map((bytes) => Math.floor(bytes / 2)))
}
