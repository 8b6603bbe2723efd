import client from 'prom-client'
import type { PublishedEvent } from '../core/event.js'
import { type CounterTally, talliedCounter, TalliedHistogram } from './tallied-metrics.js'

/** Event types become label values; past this many distinct ones they count as "other". */
const MAX_TYPE_LABELS = 200

/**
 * The gateway's own Prometheus metrics, on a registry of the app's (so several gateways
 * can live in one process, as the multi-instance tests do).
 */
interface GaugeSource {
  connectionsByTransport: Record<string, number>
  channels: number
}

/**
 * Maps free-text values (event types, order statuses) to label values: the first `max`
 * distinct ones as they are, later ones as "other", so a label's cardinality is bounded.
 */
export function boundedLabel (max: number): (value: string) => string {
  const seen = new Set<string>()
  return (value) => {
    if (seen.has(value)) return value
    if (seen.size >= max) return 'other'
    seen.add(value)
    return value
  }
}

/**
 * A counter's series bound once per label value: an increment is then no label lookup,
 * which matters on paths run per event or per message. `label` keeps the values bounded
 * (past its limit they share one series), and so does the map: only values kept as they
 * are get an entry; each label value is bound at most once.
 */
export function seriesPerLabel (bind: (labelValue: string) => CounterTally, label: (value: string) => string): (value: string) => CounterTally {
  const bound = new Map<string, CounterTally>()
  return (value) => {
    let series = bound.get(value)
    if (series === undefined) {
      const kept = label(value)
      series = bound.get(kept) ?? bind(kept)
      bound.set(kept, series)
    }
    return series
  }
}

export function createGatewayMetrics (registry: client.Registry) {
  const registers = [registry]
  /** Read at scrape time; bound by the hub plugin once the hub exists. */
  let gaugeSource: (() => GaugeSource) | undefined
  const typeLabel = boundedLabel(MAX_TYPE_LABELS)

  // Gauges filled at scrape time from the hub: registered here (the registry keeps them), never set from outside.
  registry.registerMetric(new client.Gauge({
    name: 'gateway_connections',
    help: 'Open client connections on this instance',
    labelNames: ['transport'],
    registers: [],
    collect () {
      const source = gaugeSource?.()
      for (const [transport, count] of Object.entries(source?.connectionsByTransport ?? {})) this.set({ transport }, count)
    }
  }))
  registry.registerMetric(new client.Gauge({
    name: 'gateway_channels',
    help: 'Channels with at least one local subscriber',
    registers: [],
    collect () { this.set(gaugeSource?.().channels ?? 0) }
  }))
  // Counted per event delivered: tallied (lib/ops/tallied-metrics.ts).
  const messagesSent = talliedCounter({
    name: 'gateway_messages_sent_total', help: 'Events delivered to client connections, by event type', labelNames: ['type'], registers
  })
  const messagesReceived = new client.Counter({
    name: 'gateway_messages_received_total', help: 'Frames received from WebSocket clients, by frame type', labelNames: ['type'], registers
  })
  const eventsPublished = talliedCounter({
    name: 'gateway_events_published_total', help: 'Events accepted by the broker, by ingress', labelNames: ['source'], registers
  })
  const deliverLatency = new TalliedHistogram({
    name: 'gateway_publish_to_deliver_seconds',
    help: 'Time from broker acceptance to hand-off to local connections',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers
  }).series()
  const slowClients = new client.Counter({
    name: 'gateway_slow_client_disconnects_total', help: 'Connections cut because their send buffer overflowed', labelNames: ['transport'], registers
  })
  const rateLimited = new client.Counter({
    name: 'gateway_ws_rate_limited_total', help: 'Client frames refused by the per-connection rate limit', registers
  })
  const refusedConnections = new client.Counter({
    name: 'gateway_connections_refused_total', help: 'Connections refused, by reason', labelNames: ['transport', 'reason'], registers
  })
  const refusedOrigins = new client.Counter({
    name: 'gateway_origins_refused_total', help: 'WebSocket upgrades and SSE requests refused for their Origin (WS_ALLOWED_ORIGINS)', labelNames: ['transport'], registers
  })
  const idempotentReplays = new client.Counter({
    name: 'gateway_idempotent_replays_total',
    help: 'Publishes not made again: HTTP requests answered from an earlier one with the same Idempotency-Key, Kafka events whose message was read again',
    labelNames: ['source'],
    registers
  })
  const disconnects = new client.Counter({
    name: 'gateway_disconnects_total', help: 'Connections closed on this instance by a disconnect or a revocation', labelNames: ['cause'], registers
  })
  const revocations = new client.Counter({
    name: 'gateway_revocations_total', help: 'Revocations made through this instance, by kind (user, jti)', labelNames: ['kind'], registers
  })
  const publishPaced = new client.Counter({
    name: 'gateway_publish_paced_seconds_total',
    help: 'Time publishes waited for this instance\'s Redis subscriber connection to read its own events back (docs/operations.md, Sizing Redis)',
    registers
  })

  /**
   * The sent counter of each event type, bound once (at most MAX_TYPE_LABELS + 'other'):
   * `delivered` runs for every event, and a label lookup there was a visible share of a
   * Kafka backlog's drain (bench/README.md, "Kafka ingest").
   */
  const sentOfType = seriesPerLabel((type) => messagesSent.series({ type }), typeLabel)
  /** Kafka's count, per message batch settled (plugins/kafka.ts); HTTP's per request on the counter itself. */
  const kafkaEventsPublished = eventsPublished.series({ source: 'kafka' })

  let lastTs = ''
  let lastTsMs = 0

  return {
    bindGauges: (source: () => GaugeSource) => { gaugeSource = source },
    eventsPublished: eventsPublished.counter,
    kafkaEventsPublished,
    slowClients,
    rateLimited,
    refusedConnections,
    refusedOrigins,
    idempotentReplays,
    disconnects,
    revocations,
    publishPaced,
    frameReceived: (type: string) => messagesReceived.inc({ type: typeLabel(type) }),
    delivered: (event: PublishedEvent, recipients: number) => {
      if (recipients > 0) sentOfType(event.type).inc(recipients)
      // A batch's events share their ts (the memory broker's are one string): parse it once.
      if (event.ts !== lastTs) {
        lastTs = event.ts
        lastTsMs = Date.parse(lastTs)
      }
      deliverLatency.observe(Math.max(0, Date.now() - lastTsMs) / 1000)
    }
  }
}

export type GatewayMetrics = ReturnType<typeof createGatewayMetrics>
