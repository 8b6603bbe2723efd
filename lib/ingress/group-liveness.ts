import { performance } from 'node:perf_hooks'

/**
 * Whether the Kafka consumer is a live member of its group, for readiness (docs/protocol.md,
 * health): joined, and heard from by the group coordinator lately. A member heartbeats
 * every 3–4 s when idle, after each batch, and in the sleeps of a publish retried while the
 * broker is down. A Kafka that hangs rather than refuses (a frozen process, a network
 * partition) drops no connection and raises no event: only the silence of the heartbeats
 * tells (audit: readiness stayed 200 through a 75 s freeze).
 *
 * A rebalance is not silence: once the coordinator has answered that the group rebalances,
 * the member waits in its rejoin until every member has rejoined, or until a slow one's
 * session ends (a member mid-batch rejoins only when its batch is done), and heartbeats
 * nothing meanwhile (review: 10.3 s measured on a healthy idle member). It stays ready
 * while rejoining, for at most the rebalance timeout; a Kafka that hangs then ends in a
 * request timeout, a crash, and `left`.
 */
export class GroupLiveness {
  private member = false
  private heardAt = 0
  private rejoiningSince: number | undefined

  /**
   * @param silenceMs how long without an answered heartbeat makes the member not ready
   * @param rejoinMs how long a rejoin may take (the consumer's rebalance timeout)
   */
  constructor (
    private readonly silenceMs: number,
    private readonly rejoinMs: number,
    private readonly now: () => number = () => performance.now()
  ) {}

  /** The consumer joined its group (a new generation): heard from just now. */
  joined (): void {
    this.member = true
    this.heardAt = this.now()
    this.rejoiningSince = undefined
  }

  /** The coordinator answered a heartbeat. */
  heard (): void {
    this.heardAt = this.now()
  }

  /** The coordinator answered that the group is rebalancing: the member rejoins. */
  rejoining (): void {
    this.heardAt = this.now()
    this.rejoiningSince = this.heardAt
  }

  /** The consumer crashed, disconnected or stopped. */
  left (): void {
    this.member = false
    this.rejoiningSince = undefined
  }

  get ready (): boolean {
    if (!this.member) return false
    const now = this.now()
    if (this.rejoiningSince !== undefined) return now - this.rejoiningSince < this.rejoinMs
    return now - this.heardAt < this.silenceMs
  }
}
