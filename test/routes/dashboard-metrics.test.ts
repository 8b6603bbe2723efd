import { randomBytes } from 'node:crypto'
import t from 'tap'
import { parse as parseYaml } from 'yaml'
import { deleteRedisPrefix, portOpen, read } from '../support/deploy-files.js'
import { post, requireService, serviceToken, sleep, SseClient, startServer, token, WsClient } from '../support/helper.js'
import { exposedSeries, readPromQl, templateLabels } from '../support/promql.js'
import { kafkaFixture, useKafka } from '../support/kafka-fixture.js'

/**
 * Every metric the Grafana dashboard and the Prometheus alerts query is one a real
 * gateway — on Redis and Kafka, as docker-compose.yml runs it — exports at /metrics,
 * and every label they match, group or show is one that metric carries.
 */

const REDIS_URL = 'redis://127.0.0.1:6379'
/** Series Prometheus makes itself, not read from /metrics. */
const SYNTHETIC: Record<string, string[]> = { up: [] }
/** Labels Prometheus adds to every scraped series. */
const TARGET_LABELS = ['instance', 'job']

interface Query { where: string, expr: string, shown: string[] }

function queries (): Query[] {
  const out: Query[] = []
  const dashboard = JSON.parse(read('deploy/grafana/dashboards/realtime-gateway.json'))
  for (const panel of dashboard.panels) {
    for (const target of panel.targets ?? []) {
      out.push({ where: `panel "${panel.title}"`, expr: target.expr, shown: templateLabels(target.legendFormat ?? '') })
    }
  }
  for (const group of parseYaml(read('deploy/prometheus/alerts.yml')).groups) {
    for (const rule of group.rules) {
      out.push({ where: `alert ${rule.alert}`, expr: rule.expr, shown: templateLabels(JSON.stringify(rule.annotations ?? {})) })
    }
  }
  return out
}

t.test('the dashboard shows what the issue asks for', async (t) => {
  const all = queries().filter((q) => q.where.startsWith('panel')).map((q) => q.expr).join('\n')
  for (const metric of ['gateway_connections', 'gateway_events_published_total', 'gateway_publish_to_deliver_seconds_bucket',
    'gateway_kafka_consumer_lag', 'gateway_slow_client_disconnects_total', 'orders_total']) {
    t.match(all, metric, `a panel reads ${metric}`)
  }
})

t.test('the PromQL reader finds names, matchers and groupings', async (t) => {
  const use = readPromQl('histogram_quantile(0.99, sum by (le, topic) (rate(x_seconds_bucket{outcome="a{b}",job=~"g.*"}[$__rate_interval]))) > 1.5e9')
  t.same(use.metrics, ['x_seconds_bucket'])
  t.same(use.matchers, { x_seconds_bucket: ['outcome', 'job'] })
  t.same(use.grouping, ['le', 'topic'])
  t.same(readPromQl('up{job="g"} == 0').metrics, ['up'])
})

t.test('every metric and label the dashboard and alerts query is exported by a running gateway', async (t) => {
  if (!requireService(t, 'redis', await portOpen('127.0.0.1', 6379))) return
  // Shared with the other Kafka files; kafka-restart.test.ts takes it exclusively.
  if (!await useKafka(t)) return
  // Topics made and removed by the shared fixture (it waits for their leaders).
  const kafka = await kafkaFixture(t, 1)
  const redisPrefix = `test:dashboard:${randomBytes(4).toString('hex')}:`
  t.teardown(async () => { await deleteRedisPrefix(REDIS_URL, redisPrefix) })
  const { app, url, wsUrl } = await startServer(t, { ...kafka.env, REDIS_URL, REDIS_KEY_PREFIX: redisPrefix })

  // Traffic on every path the dashboard watches: both transports, HTTP and Kafka ingress.
  const ws = await WsClient.connect(t, wsUrl, token('dash-user'))
  await ws.subscribe(['product:dash'])
  const sse = await SseClient.open(t, `${url}/sse?channels=product:dash`, { authorization: `Bearer ${token('dash-user')}` })
  t.equal((await post(`${url}/realtime/publish`, serviceToken(), { channel: 'product:dash', type: 'product:updated', payload: {} })).status, 202)
  await ws.next((f) => f.channel === 'product:dash')
  await sse.waitFor(1, (e) => e.event === 'product:updated')
  let scrape = ''
  // The consumer joins its group in a few seconds; until then messages wait in the topic.
  for (let i = 0; i < 40 && !/^orders_total\{/m.test(scrape); i++) {
    if (i % 5 === 0) {
      await kafka.produce('order.updated', { orderId: `o-${i}`, buyerId: 'dash-user', status: 'shipped' })
    }
    await sleep(500)
    scrape = await (await fetch(`${url}/metrics`)).text()
  }
  t.match(scrape, /^orders_total\{status="shipped"\} \d/m, 'the Kafka order reached the metrics')
  await ws.next((f) => f.type === 'order:updated')

  const series = exposedSeries(scrape)
  const labelsOf = (name: string): string[] | undefined => {
    if (SYNTHETIC[name] !== undefined) return [...SYNTHETIC[name], ...TARGET_LABELS]
    const family = series.get(name)
    if (family === undefined) return undefined
    const metric = app.metricsRegistry.getSingleMetric(family) as unknown as { labelNames?: string[] } | undefined
    const extra = name.endsWith('_bucket') ? ['le'] : []
    return [...(metric?.labelNames ?? []), ...extra, ...TARGET_LABELS]
  }

  const checked = new Set<string>()
  for (const query of queries()) {
    const use = readPromQl(query.expr)
    t.ok(use.metrics.length > 0, `${query.where} reads a metric`)
    const available = new Set<string>()
    for (const metric of use.metrics) {
      const labels = labelsOf(metric)
      checked.add(metric)
      if (!t.ok(labels, `${query.where}: ${metric} is exported at /metrics`) || labels === undefined) continue
      labels.forEach((l) => available.add(l))
      for (const label of use.matchers[metric] ?? []) t.ok(labels.includes(label), `${query.where}: ${metric} has label ${label}`)
    }
    for (const label of [...use.grouping, ...query.shown]) {
      t.ok(available.has(label), `${query.where}: label ${label} exists on ${use.metrics.join(', ')}`)
    }
  }
  t.comment(`checked ${checked.size} metrics: ${[...checked].sort().join(', ')}`)
})
