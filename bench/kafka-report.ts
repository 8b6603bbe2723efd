import { cpus } from 'node:os'
import type { DrainResult, KafkaResult } from './kafka.js'
import { formatTable, rate } from './report.js'

/**
 * The Kafka case's tables: backlog drain rates against the do-nothing consumer, and
 * produce-to-receive latency at a steady rate. Targets (issue 18): the gateway at
 * ≥ 0.5× the limit on the memory broker and ≥ 0.2× on Redis; p99 under 50 ms.
 */
export const DRAIN_TARGETS: Record<string, number> = { memory: 0.5, redis: 0.2 }
export const LATENCY_P99_TARGET_MS = 50

export interface KafkaCheck { what: string, value: number, limit: number, met: boolean }

const micros = (us: number | undefined): string => us === undefined ? '–' : us.toFixed(1)

/**
 * What this machine could drain if the gateway cost no more than the do-nothing consumer
 * (fetching and decoding, nothing else): its cores, spent on that plus what the rest of
 * the machine (clients, Kafka, Redis) spent per message in the same drain. A target above
 * that ratio is beyond these cores whatever the gateway does with a message.
 */
function ceilingLine (d: DrainResult, reference: DrainResult | undefined): string | undefined {
  if (d.cpuUsPerMessage === undefined || d.machineCpuUsPerMessage === undefined || reference?.cpuUsPerMessage === undefined) return undefined
  const rest = d.machineCpuUsPerMessage - d.cpuUsPerMessage
  if (rest <= 0) return undefined
  const ceiling = (cpus().length * 1e6) / (rest + reference.cpuUsPerMessage)
  return `${d.name}: a gateway costing what the do-nothing consumer does (${reference.cpuUsPerMessage.toFixed(1)} µs/msg) plus the rest ` +
    `(${rest.toFixed(1)} µs/msg) on ${cpus().length} cores: ≤ ${rate(ceiling)} msgs/s = ${(ceiling / reference.messagesPerSec).toFixed(2)}× the do-nothing consumer`
}

export function kafkaTables (result: KafkaResult): { text: string, checks: KafkaCheck[] } {
  const checks: KafkaCheck[] = []
  const limit = result.limit?.messagesPerSec
  const drainRows = [result.limit, ...result.drains].filter((d) => d !== undefined).map((d) => {
    const ratio = limit === undefined || limit === 0 || d.messagesPerSec === 0 ? undefined : d.messagesPerSec / limit
    const broker = d.name.includes('redis') ? 'redis' : d.name.includes('memory') ? 'memory' : undefined
    let mark = ''
    if (broker !== undefined && ratio !== undefined) {
      const target = DRAIN_TARGETS[broker]
      const met = ratio >= target
      checks.push({ what: `drain, ${d.name}, ratio to the do-nothing consumer`, value: ratio, limit: target, met })
      mark = `${met ? 'ok' : 'TARGET MISSED'} ≥${target}×`
    }
    return ['drain', d.name, rate(d.messagesPerSec), d.eventsPerSec === undefined ? '–' : rate(d.eventsPerSec),
      (d.ms / 1000).toFixed(2), micros(d.cpuUsPerMessage), micros(d.clientsCpuUsPerMessage), micros(d.machineCpuUsPerMessage),
      ratio === undefined ? '–' : `${ratio.toFixed(2)}×`, [mark, d.error ?? ''].filter((x) => x !== '').join('; ')]
  })
  const latencyRows = result.latency.map((l) => {
    // The do-nothing consumer's row is the floor (Kafka and kafkajs alone), not held to the target.
    const floor = l.name.includes('does nothing')
    const met = l.p99 < LATENCY_P99_TARGET_MS
    if (!floor && Number.isFinite(l.p99)) checks.push({ what: `latency p99, ${l.name}, ms`, value: l.p99, limit: LATENCY_P99_TARGET_MS, met })
    const target = floor ? 'the floor' : Number.isFinite(l.p99) ? `${met ? 'ok' : 'TARGET MISSED'} p99 <${LATENCY_P99_TARGET_MS} ms` : ''
    return ['latency', l.name, String(l.rate), `${l.received}/${l.events}`, l.p50.toFixed(2), l.p99.toFixed(2),
      [target, l.error ?? '', l.gaps > 0 ? `${l.gaps} offsets out of sequence` : ''].filter((x) => x !== '').join('; ')]
  })
  const e = result.expected
  const lines = [
    `Kafka ingest: a backlog of ${e?.messages ?? '?'} messages (${e?.events ?? '?'} events, ${e?.dlq ?? '?'} poison) on the gateway's topics × ${result.settings.partitions} partitions,` +
      ' drained by a fresh group; ratios are ÷ the do-nothing kafkajs consumer (msgs/s).',
    formatTable(drainRows, ['kafka', 'case', 'msgs/s', 'events/s', 'seconds', 'CPU µs/msg', 'clients µs/msg', 'machine µs/msg', 'ratio', 'targets']),
    'CPU per message: the gateway process, its clients\' process, the whole machine (Kafka, Redis and the bench included).',
    ...result.drains.map((d) => ceilingLine(d, result.limit)).filter((l) => l !== undefined),
    '',
    `Produce-to-receive latency at a steady ${result.settings.latencyRate} msgs/s for ${(result.settings.latencyMs / 1000).toFixed(0)} s (every event's time, ms).`,
    formatTable(latencyRows, ['kafka', 'case', 'msgs/s', 'events', 'p50', 'p99', 'targets'])
  ]
  if (result.error !== undefined) lines.push(`kafka case error: ${result.error}`)
  for (const d of result.drains) if ((d.wrong?.length ?? 0) > 0) lines.push(`${d.name}: channels off: ${d.wrong?.join(', ')}`)
  return { text: lines.join('\n'), checks }
}
