import { monotonicMs } from '../core/clock.js'

/**
 * Offset commits off the fetch path. kafkajs fetches again only once every batch of the
 * previous fetch was handled, and with its autoCommit it commits after every batch: at
 * a steady rate each fetch cycle was fetch + handling + a commit round trip per batch.
 * With autoCommit off the consumer resolves offsets as before (only those of messages
 * handed to the broker or the DLQ: at-least-once is unchanged) and this commits them in
 * the background, at most one commit in flight and one started per `intervalMs`, never
 * awaited by a batch. `flush` commits what is left, awaited: on shutdown and before a
 * rebalance, where kafkajs's autoCommit would have committed. What a crash leaves
 * uncommitted (at most an interval's worth) is redelivered and skipped by the origin
 * high-water marks (effectively once, lib/ingress/idempotency.ts).
 */
export class BackgroundCommits {
  private inFlight: Promise<void> | undefined
  private timer: NodeJS.Timeout | undefined
  /** Offsets were resolved since the last commit started. */
  private pending = false
  private lastStart: number
  private stopped = false

  /**
   * @param commit commits every offset resolved so far (kafkajs: `commitOffsetsIfNecessary(uncommittedOffsets())`)
   * @param onError a failed background commit (the next one carries its offsets)
   */
  constructor (
    private readonly commit: () => Promise<void>,
    private readonly intervalMs: number,
    private readonly onError: (err: unknown) => void
  ) {
    this.lastStart = monotonicMs()
  }

  /** Offsets were resolved: committed within `intervalMs`, in the background. Cheap enough to call per message. */
  resolved (): void {
    this.pending = true
    if (this.inFlight !== undefined || this.timer !== undefined || this.stopped) return
    const wait = this.lastStart + this.intervalMs - monotonicMs()
    if (wait <= 0) {
      this.start()
      return
    }
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.start()
    }, wait)
    this.timer.unref()
  }

  /** Waits for the commit in flight, then commits what was resolved since; rejects if that commit fails. */
  async flush (): Promise<void> {
    clearTimeout(this.timer)
    this.timer = undefined
    while (this.inFlight !== undefined) await this.inFlight
    if (!this.pending) return
    this.pending = false
    this.lastStart = monotonicMs()
    const committing = this.commit()
    this.inFlight = committing.then(() => {}, () => {}).finally(() => { this.inFlight = undefined })
    await committing
  }

  /** No more background commits (a `flush` still commits). */
  stop (): void {
    this.stopped = true
    clearTimeout(this.timer)
    this.timer = undefined
  }

  private start (): void {
    if (!this.pending || this.stopped) return
    this.pending = false
    this.lastStart = monotonicMs()
    this.inFlight = this.commit().catch(this.onError).finally(() => {
      this.inFlight = undefined
      if (this.pending) this.resolved()
    })
  }
}
