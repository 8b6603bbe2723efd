import t from 'tap'
import client from 'prom-client'
import { boundedLabel, seriesPerLabel } from '../../lib/ops/metrics.js'
import { talliedCounter } from '../../lib/ops/tallied-metrics.js'

// Labels taken from traffic (event types, order statuses) are bounded: past the limit they
// share one series, and binding series per value (for speed) must not unbound them again.
t.test('series bound per label value: values past the limit share "other", counts stay right', async (t) => {
  const registry = new client.Registry()
  const { counter, series } = talliedCounter({ name: 'test_total', help: 'test', labelNames: ['kind'], registers: [registry] })
  let bound = 0
  const seriesOf = seriesPerLabel((kind) => { bound++; return series({ kind }) }, boundedLabel(2))
  for (const value of ['a', 'b', 'a', 'c', 'd', 'c', 'b']) seriesOf(value).inc()
  const values = (await counter.get()).values.map((v) => [v.labels.kind, v.value]).sort()
  t.same(values, [['a', 2], ['b', 2], ['other', 3]], 'two kept as they are, the rest in "other"')
  t.equal(seriesOf('a'), seriesOf('a'), 'a kept value is bound once')
  seriesOf('x').inc()
  const other = (await counter.get()).values.find((v) => v.labels.kind === 'other')
  t.equal(other?.value, 4, 'a new value past the limit counts in "other" too, no series of its own')
  t.equal((await counter.get()).values.length, 3, 'still three series')
  t.equal(bound, 3, 'each label value bound once: a, b and other')
})
