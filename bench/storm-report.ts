/**
 * The reconnect storm's table (bench/storm.ts), its targets (issue 18: zero lost events,
 * resume rate ≥ 0.8× bare ws's connect rate), and the ceiling line of each storm.
 */
import type { StormResult, StormVariant } from './storm.js'

const f = (n: number, digits = 0) => n.toFixed(digits)

/** The target: resumes per second at least this share of bare ws's plain connects per second. */
export const RESUME_RATE_TARGET = 0.8

/**
 * What this machine could resume if the gateway cost no more per resume than bare ws per
 * plain connect: its cores, spent on that plus what the rest of the machine (the clients,
 * the publishing gateway, Redis, the bench) spent per resume in the same storm. A target
 * above that ratio is beyond these cores whatever the gateway does (bench/README.md).
 * `budgetUs`: the gateway's CPU per resume (live fan-out included) that the same rest leaves
 * for the target rate; ≤ 0 when no gateway could meet it here.
 */
export function stormCeiling (r: StormResult, v: StormVariant, cores: number): { rate: number, ratio: number, restUs: number, budgetUs: number } | undefined {
  if (v.machineCpuUsPerResume === undefined || v.cpuUsPerResume === undefined || r.wsCpuUsPerConnect === undefined || r.wsConnectPerSec <= 0) return undefined
  const restUs = v.machineCpuUsPerResume - v.cpuUsPerResume
  if (restUs <= 0) return undefined
  const rate = (cores * 1e6) / (restUs + r.wsCpuUsPerConnect)
  const budgetUs = (cores * 1e6) / (RESUME_RATE_TARGET * r.wsConnectPerSec) - restUs
  return { rate, ratio: rate / r.wsConnectPerSec, restUs, budgetUs }
}

/** The table run.ts prints, and the targets: zero lost events, resume rate ≥ 0.8× bare ws's connect rate. */
export function stormReport (results: StormResult[], cores: number): { text: string, misses: string[], ceilings: string[] } {
  const header = ['C', 'storm', 'resumed', 'seconds', 'resumes/s', 'bare ws conn/s', 'ratio', 'CPU µs each (bare ws)', 'lost', 'dup', 'recovered:false', 'events checked']
  const rows: string[][] = []
  const misses: string[] = []
  const ceilings: string[] = []
  for (const r of results) {
    if (r.error !== undefined) misses.push(`storm C=${r.connections} FAILED: ${r.error}`)
    const cpu = (us?: number) => us === undefined ? '' : `${f(us)} (${f(r.wsCpuUsPerConnect ?? 0)})`
    rows.push([String(r.connections), 'first connect', String(r.connected), '', f(r.connectPerSec), f(r.wsConnectPerSec), `${f(r.connectPerSec / r.wsConnectPerSec, 2)}×`, cpu(r.connectCpuUs), '', '', '', ''])
    for (const v of r.variants) {
      const ratio = v.resumePerSec / r.wsConnectPerSec
      rows.push([String(r.connections), v.variant, String(v.resumed), f(v.seconds, 2), f(v.resumePerSec), f(r.wsConnectPerSec), `${f(ratio, 2)}×`, cpu(v.cpuUsPerResume),
        String(v.lost), String(v.duplicates), String(v.unrecovered), String(v.expected)])
      if (v.lost > 0 || v.duplicates > 0) misses.push(`TARGET MISSED at C=${r.connections} (${v.variant}): ${v.lost} events lost, ${v.duplicates} duplicates (target 0)`)
      if (ratio < RESUME_RATE_TARGET) misses.push(`TARGET MISSED at C=${r.connections} (${v.variant}): resume rate ${f(ratio, 2)}× bare ws's connect rate (target ≥ ${RESUME_RATE_TARGET}×)`)
      const ceiling = stormCeiling(r, v, cores)
      if (ceiling !== undefined) {
        ceilings.push(`C=${r.connections} ${v.variant}: the clients ${f(v.loadsCpuUsPerResume ?? 0)} µs per resume (${f(r.wsLoadsCpuUsPerConnect ?? 0)} per bare connect), ` +
          `the machine but the gateway ${f(ceiling.restUs)} µs; a gateway costing what bare ws does (${f(r.wsCpuUsPerConnect ?? 0)} µs) plus that rest on ${cores} cores: ` +
          `≤ ${f(ceiling.rate)} resumes/s = ${f(ceiling.ratio, 2)}× bare ws's connect rate; ` +
          (ceiling.budgetUs > 0 ? `${RESUME_RATE_TARGET}× leaves the gateway ${f(ceiling.budgetUs)} µs per resume (it spent ${f(v.cpuUsPerResume ?? 0)})` : `no gateway reaches ${RESUME_RATE_TARGET}× here`))
      }
      if (v.resumed < r.connected) misses.push(`TARGET MISSED at C=${r.connections} (${v.variant}): ${v.resumed} of ${r.connected} resumed: ${JSON.stringify(v.errors)}`)
    }
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)))
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`
  const text = [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n')
  return { text, misses, ceilings }
}
