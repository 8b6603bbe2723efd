import { cpus } from 'node:os'

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
