import t from 'tap'
import type { StormResult, StormVariant } from '../../bench/storm.js'
import { stormCeiling, stormReport } from '../../bench/storm-report.js'

// Whether the storm target is within this machine's reach rests on this line (bench/README.md,
// "Session 34"): pin its arithmetic and when it stays silent.

function storm (variant: Partial<StormVariant>, result: Partial<StormResult> = {}): { r: StormResult, v: StormVariant } {
  const v: StormVariant = {
    variant: 'drop',
    resumed: 2000,
    seconds: 2,
    resumePerSec: 1000,
    cpuUsPerResume: 800,
    machineCpuUsPerResume: 1700,
    loadsCpuUsPerResume: 850,
    lost: 0,
    duplicates: 0,
    expected: 10_000,
    lossyClients: 0,
    unrecovered: 0,
    published: 40,
    errors: {},
    ...variant
  }
  const r: StormResult = {
    connections: 2000,
    connected: 2000,
    connectPerSec: 700,
    wsConnected: 2000,
    wsConnectPerSec: 2000,
    wsCpuUsPerConnect: 300,
    wsLoadsCpuUsPerConnect: 650,
    wsMachineCpuUsPerConnect: 1000,
    connectCpuUs: 1400,
    variants: [v],
    concurrency: 500,
    loadProcesses: 2,
    publishFailures: 0,
    keyPrefix: 'x:',
    ...result
  }
  return { r, v }
}

t.test('the ceiling: the cores spent on a bare-ws-priced gateway plus the rest of the machine', async (t) => {
  const { r, v } = storm({})
  const ceiling = stormCeiling(r, v, 2)
  // The rest of the machine is 1700 - 800 = 900 µs a resume; with 300 µs for the gateway, 2 cores give 2e6 / 1200.
  t.equal(ceiling?.restUs, 900)
  t.equal(Math.round(ceiling?.rate ?? 0), 1667)
  t.equal(ceiling?.ratio.toFixed(3), (2e6 / 1200 / 2000).toFixed(3))
  t.equal(Math.round(stormCeiling(r, v, 4)?.rate ?? 0), 3333, 'twice the cores, twice the ceiling')
  // 0.8 × 2000 connects/s on 2 cores is 1250 µs a resume for the whole machine, 900 of it the rest's.
  t.equal(Math.round(ceiling?.budgetUs ?? 0), 350)
  const { r: fast, v: heavy } = storm({ machineCpuUsPerResume: 2400 }, { wsConnectPerSec: 2000 })
  t.ok((stormCeiling(fast, heavy, 2)?.budgetUs ?? 1) < 0, 'a rest above the target\'s whole budget leaves the gateway nothing')
})

t.test('no ceiling without the figures it needs, or when the rest of the machine spent nothing', async (t) => {
  for (const [what, variant, result] of [
    ['no machine figure', { machineCpuUsPerResume: undefined }, {}],
    ['no gateway figure', { cpuUsPerResume: undefined }, {}],
    ['no bare ws figure', {}, { wsCpuUsPerConnect: undefined }],
    ['no bare ws rate', {}, { wsConnectPerSec: 0 }],
    ['the machine below the gateway (its 10 ms ticks)', { machineCpuUsPerResume: 700 }, {}]
  ] as const) {
    const { r, v } = storm(variant, result)
    t.equal(stormCeiling(r, v, 2), undefined, what)
  }
})

t.test('the report prints a ceiling line per storm beside the misses', async (t) => {
  const { r } = storm({})
  const report = stormReport([r], 2)
  t.equal(report.ceilings.length, 1)
  t.match(report.ceilings[0], /^C=2000 drop: the clients 850 µs per resume \(650 per bare connect\), the machine but the gateway 900 µs; .* ≤ 1667 resumes\/s = 0\.83× bare ws's connect rate; 0\.8× leaves the gateway 350 µs per resume \(it spent 800\)$/)
  const { r: heavy } = storm({ machineCpuUsPerResume: 2400 })
  t.match(stormReport([heavy], 2).ceilings[0], /no gateway reaches 0\.8× here$/)
  t.match(report.misses.join('\n'), /resume rate 0\.50× bare ws's connect rate/)
})
