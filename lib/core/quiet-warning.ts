import { monotonicMs } from './clock.js'

export interface QuietWarningOptions {
  /**
   * Says what was held back once a burst is over: called at the end of an interval that held
   * some back and said no line after them, with their number. Without it, a burst's tail was
   * told only with the next line, perhaps hours later, or never (review, session 31).
   */
  onHeldBack?: (heldBack: number) => void
  now?: () => number
}

/**
 * A warning said at most once per interval, with how many like it were held back since.
 *
 * Why: some failures meet everyone at once. While Redis is away every frame of every
 * connection that needs it fails the same way, and a line each was thousands of lines a
 * second (audits, sessions 29 and 30): the log then drowns what is new in it, and costs
 * the instance its time while it is already in trouble.
 */
export class QuietWarning {
  private saidAt = -Infinity
  private held = 0
  private tail: NodeJS.Timeout | null = null
  private readonly now: () => number

  constructor (private readonly intervalMs: number, private readonly options: QuietWarningOptions = {}) {
    this.now = options.now ?? monotonicMs
  }

  /**
   * One more occurrence. Undefined when it is held back; otherwise it is to be said, and the
   * number is how many were held back since the last one said.
   */
  occurred (): number | undefined {
    const now = this.now()
    if (now - this.saidAt < this.intervalMs) {
      this.held++
      if (this.tail === null && this.options.onHeldBack !== undefined) {
        // Unref'd: a warning due never keeps the process up.
        this.tail = setTimeout(() => this.sayHeldBack(), this.saidAt + this.intervalMs - now)
        this.tail.unref()
      }
      return undefined
    }
    const held = this.held
    this.held = 0
    this.saidAt = now
    return held
  }

  /** The end of an interval that held some back: they are said now, and count as this interval's line. */
  private sayHeldBack (): void {
    this.tail = null
    if (this.held === 0) return
    const held = this.held
    this.held = 0
    this.saidAt = this.now()
    this.options.onHeldBack?.(held)
  }
}
