import { cpus } from 'node:os'
import type { ChildChannel } from './ipc.js'

/**
 * CPU time the whole machine spent busy (user, nice, system, irq, summed over every core),
 * in µs: with a process's own `process.cpuUsage()`, it tells what the rest of the machine
 * (clients, Kafka, Redis) spent on the same work. The kernel counts in 10 ms ticks, so
 * read it over seconds, not milliseconds.
 */
export function machineBusyUs (): number {
  let ms = 0
  for (const { times } of cpus()) ms += times.user + times.nice + times.sys + times.irq
  return ms * 1000
}

/** A bench process's CPU time so far (user + system, µs), from its `cpu` op (bench/servers/control.ts, the load processes). */
export async function processCpuUs (child: ChildChannel): Promise<number> {
  const { user, system } = await child.request<{ user: number, system: number }>({ op: 'cpu' }, 10_000)
  return user + system
}

/**
 * CPU time so far (µs) of a run's three parts: the server measured, the processes beside it
 * (its clients) together, and the whole machine: read before and after the same span.
 */
export async function cpuSplit (server: ChildChannel, others: readonly ChildChannel[]): Promise<{ server: number, others: number, machine: number }> {
  const [own, ...each] = await Promise.all([processCpuUs(server), ...others.map(processCpuUs)])
  return { server: own, others: each.reduce((a, b) => a + b, 0), machine: machineBusyUs() }
}
