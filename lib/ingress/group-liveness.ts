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
  /** When a fetch was first answered after the heartbeats had gone silent (see `fetched`). */
  private fetchingUnheardSince: number | undefined

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
    this.fetchingUnheardSince = undefined
  }

  /** The coordinator answered a heartbeat. */
  heard (): void {
    this.heardAt = this.now()
    this.fetchingUnheardSince = undefined
  }

  /** The coordinator answered that the group is rebalancing: the member rejoins. */
  rejoining (): void {
    this.heardAt = this.now()
    this.rejoiningSince = this.heardAt
    this.fetchingUnheardSince = undefined
  }

  /** The consumer crashed, disconnected or stopped. */
  left (): void {
    this.member = false
    this.rejoiningSince = undefined
    this.fetchingUnheardSince = undefined
  }

  /**
   * Kafka answered a fetch. True when this member is in no group although its consumer runs:
   * its fetches have been answered for as long again as the silence allowed, while no
   * heartbeat was. kafkajs 2.2.4 gets there when the coordinator forgot the member (it
   * answers "unknown member", and kafkajs clears its member id to join afresh) and the join
   * that follows fails on a retriable error other than a rebalance (the coordinator still
   * loading its partition, as after a broker froze or restarted: the longer the more
   * offsets it holds): kafkajs gives the join up, fetches on, and skips every heartbeat
   * without a member id, so it never rejoins and readiness stays 503 for good
   * (test/ingress/kafka-restart.test.ts, the frozen broker, 1 run in 20). Only starting the
   * consumer again joins. A thaw is given a session to rejoin first; a coordinator that
   * hangs mostly holds the fetch loop on its heartbeat, and a restart then is no worse than
   * kafkajs's own retries.
   *
   * kafkajs fetches nothing while it rejoins: a fetch after `rejoining` and before `joined`
   * means the rejoin was given up (the same fault, reached from a rebalance), and the
   * silence counts from the rejoin (review, session 31).
   */
  fetched (): boolean {
    if (!this.member) return false
    this.rejoiningSince = undefined
    const now = this.now()
    if (now - this.heardAt < this.silenceMs) {
      this.fetchingUnheardSince = undefined
      return false
    }
    this.fetchingUnheardSince ??= now
    if (now - this.fetchingUnheardSince < this.silenceMs) return false
    // Once per such stretch: a restart under way may see one more fetch.
    this.fetchingUnheardSince = undefined
    return true
  }

  get ready (): boolean {
    if (!this.member) return false
    const now = this.now()
    if (this.rejoiningSince !== undefined) return now - this.rejoiningSince < this.rejoinMs
    return now - this.heardAt < this.silenceMs
  }
}
