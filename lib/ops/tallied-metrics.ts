import client from 'prom-client'

/**
 * Metrics counted on paths run per event or per Kafka message. prom-client's `inc()` and
 * `observe()` hash the label set and look the series up by that string on every call,
 * which was 7–8 % of the gateway's CPU draining a Kafka backlog (bench/README.md, "Session
 * 13"). These keep plain numbers per series and hand them to the registry only when it is
 * scraped: /metrics shows the same series with the same values, the counting costs an
 * addition.
 */

/** A counter series' pending increments, added to the prom-client series at the next scrape. */
export interface CounterTally {
  inc: (amount?: number) => void
}

/**
 * A prom-client Counter whose series are counted as tallies (`series`), flushed into it by
 * its `collect`, which the registry runs before every read of the counter.
 */
export function talliedCounter<L extends string> (config: client.CounterConfiguration<L>): {
  counter: client.Counter<L>
  series: (labels: Partial<Record<L, string | number>>) => CounterTally
} {
  const tallies: Array<{ series: client.Counter.Internal, pending: number }> = []
  const counter = new client.Counter<L>({
    ...config,
    collect () {
      for (const tally of tallies) {
        if (tally.pending === 0) continue
        tally.series.inc(tally.pending)
        tally.pending = 0
      }
    }
  })
  return {
    counter,
    series (labels) {
      const tally = { series: counter.labels(labels), pending: 0 }
      tallies.push(tally)
      return { inc: (amount = 1) => { tally.pending += amount } }
    }
  }
}

/** One histogram series: counts per bucket (the last one is +Inf), their sum and count. */
export interface HistogramSeries {
  observe: (value: number) => void
}

type Labels = Record<string, string | number>

/** One line of a histogram, as prom-client's Histogram hands it to the registry. */
interface ExportedValue {
  labels: Labels
  sharedLabels: Labels
  value: number
  metricName: string
  exemplar: null | undefined
}

interface MetricData<V> {
  name: string
  help: string
  type: string
  values: V[]
  aggregator: string
}

interface SeriesState {
  labels: Labels
  counts: Float64Array
  sum: number
  count: number
}

/**
 * A histogram registered as a metric of its own, exposed exactly as prom-client's Histogram
 * exposes the same observations (`test/ops/tallied-metrics.test.ts` compares the two):
 * cumulative `_bucket` lines with `le` first, `+Inf`, `_sum`, `_count`. Its series are made
 * once per label set (`series`) and observing is a bucket search and two additions.
 */
export class TalliedHistogram {
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  readonly name: string
  readonly help: string
  readonly labelNames: readonly string[]
  private readonly upperBounds: readonly number[]
  private readonly states = new Map<string, SeriesState>()

  constructor (config: { name: string, help: string, labelNames?: readonly string[], buckets: readonly number[], registers: client.Registry[] }) {
    this.name = config.name
    this.help = config.help
    this.labelNames = config.labelNames ?? []
    this.upperBounds = [...config.buckets].sort((a, b) => a - b)
    for (const registry of config.registers) registry.registerMetric(this as unknown as client.Metric)
  }

  /**
   * The series of these labels. As with prom-client, a labelled series is shown from its
   * first observation on, the series without labels from the start.
   */
  series (labels: Labels = {}): HistogramSeries {
    for (const name of Object.keys(labels)) {
      if (!this.labelNames.includes(name)) throw new Error(`Added label "${name}" is not included in initial labelset: ${JSON.stringify(this.labelNames)}`)
    }
    const key = JSON.stringify(Object.entries(labels).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0))
    const bounds = this.upperBounds
    const stateOf = (): SeriesState => {
      let state = this.states.get(key)
      if (state === undefined) {
        state = { labels: { ...labels }, counts: new Float64Array(bounds.length + 1), sum: 0, count: 0 }
        this.states.set(key, state)
      }
      return state
    }
    let observed = Object.keys(labels).length === 0 ? stateOf() : undefined
    return {
      observe (value: number) {
        if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`)
        let i = 0
        while (i < bounds.length && value > bounds[i]) i++
        observed ??= stateOf()
        observed.counts[i] += 1
        observed.sum += value
        observed.count += 1
      }
    }
  }

  /**
   * What the registry formats for /metrics: prom-client's Histogram shape, the series'
   * labels shared by its lines (field for field, so the JSON reads the same too).
   */
  getForPromString (): MetricData<ExportedValue> {
    const values: ExportedValue[] = []
    for (const state of this.states.values()) {
      const bucket = `${this.name}_bucket`
      let cumulative = 0
      for (let i = 0; i < this.upperBounds.length; i++) {
        cumulative += state.counts[i]
        values.push({ labels: { le: this.upperBounds[i] }, sharedLabels: state.labels, value: cumulative, metricName: bucket, exemplar: null })
      }
      values.push(
        { labels: { le: '+Inf' }, sharedLabels: state.labels, value: state.count, metricName: bucket, exemplar: null },
        { labels: {}, sharedLabels: state.labels, value: state.sum, metricName: `${this.name}_sum`, exemplar: undefined },
        { labels: {}, sharedLabels: state.labels, value: state.count, metricName: `${this.name}_count`, exemplar: undefined }
      )
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator }
  }

  /** The same for registry.getMetricsAsJSON: each line's labels with its series' labels. */
  get (): MetricData<Omit<ExportedValue, 'sharedLabels'>> {
    const data = this.getForPromString()
    return {
      ...data,
      values: data.values.map(({ sharedLabels, labels, ...line }) => ({ ...line, labels: Object.assign(labels, sharedLabels) }))
    }
  }

  /** Every series back to zero (registry.resetMetrics); series already bound keep counting. */
  reset (): void {
    for (const state of this.states.values()) {
      state.counts.fill(0)
      state.sum = 0
      state.count = 0
    }
  }
}
