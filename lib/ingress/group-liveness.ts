/**
 * Whether the Kafka consumer is a live member of its group, for readiness (docs/protocol.md,
 * health): joined, and heard from by the group coordinator lately. A member heartbeats every
 * few seconds, idle or not (batches heartbeat as they go, and so do the retries of a
 * publish the broker refused). A Kafka that hangs rather than refuses (a frozen process, a
 * partition in the network) drops no connection and raises no event: only the silence of
 * the heartbeats tells (audit: readiness stayed 200 through a 75 s freeze).
 */
export class GroupLiveness {
  private member = false
  private heardAt = 0

  /** @param silenceMs how long without an answered heartbeat makes the member not ready */
  constructor (private readonly silenceMs: number, private readonly now: () => number = Date.now) {}

  /** The consumer joined its group (a new generation): heard from just now. */
  joined (): void {
    this.member = true
    this.heardAt = this.now()
  }

  /** The coordinator answered a heartbeat. */
  heard (): void {
    this.heardAt = this.now()
  }

  /** The consumer crashed, disconnected or stopped. */
  left (): void {
    this.member = false
  }

  get ready (): boolean {
    return this.member && this.now() - this.heardAt < this.silenceMs
  }
}
