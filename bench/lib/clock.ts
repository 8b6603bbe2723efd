import { performance } from 'node:perf_hooks'

/**
 * Wall-clock milliseconds with sub-millisecond resolution, comparable across processes:
 * each process's timeOrigin is read from the system clock at start-up, and performance.now()
 * is monotonic from there. (hrtime alone has no common origin between processes.)
 */
export const now = (): number => performance.timeOrigin + performance.now()

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
