/** A partition's first retained offset and its end (the offset its next message gets). */
export interface PartitionEnds {
  low: number
  high: number
}

/** What the lag is read from: Kafka's admin API (plugins/kafka.ts), or a test's figures. */
export interface LagSource {
  /** Each partition's ends, by partition number. */
  ends: (topic: string) => Promise<Map<number, PartitionEnds>>
  /** The group's committed offsets (the next offset it will read), by topic and partition; none for a partition never committed. */
  committed: (topics: readonly string[]) => Promise<Map<string, Map<number, number>>>
}

export interface PartitionLag {
  topic: string
  partition: number
  /** Messages between where this member stands and the partition's end. */
  lag: number
}

/**
 * How far behind this member is in each partition the group gave it: the partition's end
 * against the furthest of what this member settled and what the group committed (a member
 * that has settled nothing there yet starts from the commit, or from the first retained
 * message: the group reads from the beginning). Read on a timer rather than after each
 * batch: a batch stuck retrying (its broker down) never ends, and the lag that builds
 * behind it is what an operator must see (audit, session 29: the gauge read 0 while 12,604
 * messages waited). Only the partitions this member was given, so a sum over the instances
 * counts each partition once.
 */
export class ConsumerLag {
  private assignment = new Map<string, readonly number[]>()
  /** The next offset to read, per `topic` then partition, from what this member settled. */
  private readonly reached = new Map<string, Map<number, number>>()

  /** Whether the group gave this member any partition (none before it joins, or once it left). */
  get hasAssignment (): boolean {
    for (const partitions of this.assignment.values()) if (partitions.length > 0) return true
    return false
  }

  /** The partitions the group gave this member at its latest join ({} once it left); what it settled elsewhere is forgotten. */
  assigned (assignment: Readonly<Record<string, readonly number[]>>): void {
    this.assignment = new Map(Object.entries(assignment))
    this.reached.clear()
  }

  /** A message this member handled (delivered or dead-lettered). */
  settled (topic: string, partition: number, offset: string | number): void {
    let partitions = this.reached.get(topic)
    if (partitions === undefined) this.reached.set(topic, partitions = new Map())
    const next = Number(offset) + 1
    if (next > (partitions.get(partition) ?? -1)) partitions.set(partition, next)
  }

  /** The lag of every partition assigned, read from `source` now. */
  async measure (source: LagSource): Promise<PartitionLag[]> {
    const topics = [...this.assignment.keys()]
    if (topics.length === 0) return []
    const [ends, committed] = await Promise.all([
      Promise.all(topics.map(async (topic) => await source.ends(topic))),
      source.committed(topics)
    ])
    const lags: PartitionLag[] = []
    topics.forEach((topic, i) => {
      for (const partition of this.assignment.get(topic) ?? []) {
        const end = ends[i].get(partition)
        if (end === undefined) continue
        const position = Math.max(
          this.reached.get(topic)?.get(partition) ?? -1,
          committed.get(topic)?.get(partition) ?? -1,
          end.low
        )
        lags.push({ topic, partition, lag: Math.max(0, end.high - position) })
      }
    })
    return lags
  }
}

/**
 * Reads a ConsumerLag every `intervalMs` while started, one reading at a time, and only
 * while the member holds partitions (no Kafka round trip for nothing). `stop` waits for the
 * reading in flight, so nothing reads Kafka after the consumer's shutdown.
 */
export class LagPoller {
  private timer: NodeJS.Timeout | undefined
  private inFlight: Promise<void> | null = null

  constructor (
    private readonly lag: ConsumerLag,
    private readonly source: LagSource,
    private readonly report: (lags: PartitionLag[]) => void,
    private readonly failed: (err: unknown) => void,
    private readonly intervalMs: number
  ) {}

  start (): void {
    if (this.timer !== undefined) return
    this.timer = setInterval(() => { this.poll() }, this.intervalMs)
    this.timer.unref()
  }

  async stop (): Promise<void> {
    clearInterval(this.timer)
    this.timer = undefined
    await this.inFlight
  }

  private poll (): void {
    if (this.inFlight !== null || !this.lag.hasAssignment) return
    this.inFlight = this.lag.measure(this.source)
      .then((lags) => { if (this.timer !== undefined) this.report(lags) }, this.failed)
      .finally(() => { this.inFlight = null })
  }
}
