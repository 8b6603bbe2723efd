import { monotonicMs } from './clock.js'

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

  constructor (private readonly intervalMs: number, private readonly now: () => number = monotonicMs) {}

  /**
   * One more occurrence. Undefined when it is held back; otherwise it is to be said, and the
   * number is how many were held back since the last one said.
   */
  occurred (): number | undefined {
    const now = this.now()
    if (now - this.saidAt < this.intervalMs) {
      this.held++
      return undefined
    }
    const held = this.held
    this.held = 0
    this.saidAt = now
    return held
  }
}
