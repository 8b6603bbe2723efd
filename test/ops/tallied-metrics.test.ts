import fc from 'fast-check'
import t from 'tap'
import client from 'prom-client'
import { talliedCounter, TalliedHistogram } from '../../lib/ops/tallied-metrics.js'

/**
 * The tallied metrics of the per-event paths must read exactly as prom-client's own would
 * after the same calls: same /metrics text, same JSON. Compared side by side on two
 * registries, for any sequence of observations and increments.
 */
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

const observations = fc.array(fc.record({
  series: fc.constantFrom('', 'order.created', 'order.updated', 'a"b\\c'),
  value: fc.oneof(fc.double({ min: 0, max: 20, noNaN: true }), fc.constantFrom(0, 0.005, 0.0050001, 2.5, 1e9))
}), { maxLength: 60 })

t.test('a tallied histogram exposes what prom-client\'s Histogram exposes for the same observations', async (t) => {
  await fc.assert(fc.asyncProperty(observations, async (seen) => {
    const ours = new client.Registry()
    const theirs = new client.Registry()
    const tallied = new TalliedHistogram({ name: 'h_seconds', help: 'a help text', buckets: BUCKETS, labelNames: ['topic'], registers: [ours] })
    const plain = new client.Histogram({ name: 'h_seconds', help: 'a help text', buckets: BUCKETS, labelNames: ['topic'], registers: [theirs] })
    const unlabelled = new TalliedHistogram({ name: 'u_seconds', help: 'unlabelled', buckets: BUCKETS, registers: [ours] })
    const plainUnlabelled = new client.Histogram({ name: 'u_seconds', help: 'unlabelled', buckets: BUCKETS, registers: [theirs] })
    const bound = new Map<string, ReturnType<TalliedHistogram['series']>>()
    const unlabelledSeries = unlabelled.series()
    for (const { series, value } of seen) {
      if (series === '') {
        unlabelledSeries.observe(value)
        plainUnlabelled.observe(value)
        continue
      }
      let s = bound.get(series)
      if (s === undefined) bound.set(series, s = tallied.series({ topic: series }))
      s.observe(value)
      plain.observe({ topic: series }, value)
    }
    const [ourText, theirText] = [await ours.metrics(), await theirs.metrics()]
    if (ourText !== theirText) throw new Error(`text differs:\n${ourText}\n---\n${theirText}`)
    const [ourJson, theirJson] = [JSON.stringify(await ours.getMetricsAsJSON()), JSON.stringify(await theirs.getMetricsAsJSON())]
    if (ourJson !== theirJson) throw new Error(`JSON differs:\n${ourJson}\n---\n${theirJson}`)
  }), { numRuns: 300 })
  t.pass('same exposition')
})

t.test('a tallied histogram refuses what prom-client refuses, and resets to zero', async (t) => {
  const registry = new client.Registry()
  const h = new TalliedHistogram({ name: 'r_seconds', help: 'r', buckets: BUCKETS, labelNames: ['topic'], registers: [registry] })
  t.throws(() => h.series({ partition: 1 }), /not included/, 'a label the histogram was not given is refused, as prom-client refuses it')
  t.same((registry.getSingleMetric('r_seconds') as unknown as { labelNames: string[] }).labelNames, ['topic'], 'its label names are known to the registry')
  const s = h.series({ topic: 'x' })
  t.throws(() => s.observe(Number.NaN), TypeError)
  t.throws(() => s.observe(Infinity), TypeError)
  t.notMatch(await registry.metrics(), /r_seconds_count/, 'a labelled series is not shown before its first observation')
  s.observe(0.2)
  t.match(await registry.metrics(), /r_seconds_count\{topic="x"\} 1/)
  registry.resetMetrics()
  t.match(await registry.metrics(), /r_seconds_count\{topic="x"\} 0/)
  s.observe(0.3)
  t.match(await registry.metrics(), /r_seconds_sum\{topic="x"\} 0.3\n/, 'a bound series goes on counting after a reset')
})

t.test('a tallied counter shows its increments at each scrape, with the counter\'s own', async (t) => {
  const registry = new client.Registry()
  const { counter, series } = talliedCounter({ name: 'c_total', help: 'c', labelNames: ['source'], registers: [registry] })
  const kafka = series({ source: 'kafka' })
  const idle = series({ source: 'idle' })
  kafka.inc()
  kafka.inc(4)
  counter.inc({ source: 'http' }, 2)
  counter.inc({ source: 'kafka' }, 10)
  const first = await registry.metrics()
  t.match(first, /c_total\{source="kafka"\} 15\n/, 'tallied and direct increments add up')
  t.match(first, /c_total\{source="http"\} 2\n/)
  t.notMatch(first, /source="idle"/, 'a series never counted is not shown')
  kafka.inc(3)
  t.match(await registry.metrics(), /c_total\{source="kafka"\} 18\n/, 'what was counted since the last scrape is added once')
  t.match(await registry.metrics(), /c_total\{source="kafka"\} 18\n/, 'and not again')
  idle.inc(0)
  t.notMatch(await registry.metrics(), /source="idle"/, 'an increment of zero shows nothing')
})
