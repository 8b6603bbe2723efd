import { randomBytes } from 'node:crypto'
import { closeSync, mkdirSync, openSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'

/**
 * A readers–writer lock across test processes, per service (Kafka, the Redis Cluster):
 * every test file using the service holds it shared; a file that stops or kills the
 * service (test/ingress/kafka-restart.test.ts, test/broker/redis-cluster-failover.test.ts)
 * holds it exclusively, so it never pulls the service from under another file's test.
 * Entries name their pid, so a crashed holder cannot wedge it.
 */
const EXCLUSIVE = 'exclusive'
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const alive = (pid: number): boolean => { try { process.kill(pid, 0); return true } catch { return false } }

function liveEntries (dir: string): string[] {
  mkdirSync(dir, { recursive: true })
  return readdirSync(dir).filter((name) => {
    const pid = Number(name.split('-')[1])
    if (Number.isInteger(pid) && alive(pid)) return true
    rmSync(join(dir, name), { force: true })
    return false
  })
}

export async function holdServiceLock (t: Test, service: string, mode: 'shared' | 'exclusive', timeoutMs = 150_000): Promise<void> {
  const dir = join(tmpdir(), `realtime-gateway-${service}-test-lock`)
  const name = `${mode}-${process.pid}-${randomBytes(3).toString('hex')}`
  const path = join(dir, name)
  const deadline = Date.now() + timeoutMs
  const others = (prefix: string) => liveEntries(dir).filter((e) => e !== name && e.startsWith(prefix))
  for (;;) {
    // Announce first, then look: of two that race, at least one sees the other.
    // A writer waits for readers and writers; a reader only for writers.
    if (others(EXCLUSIVE).length === 0) {
      closeSync(openSync(path, 'wx'))
      t.teardown(() => rmSync(path, { force: true }))
      for (;;) {
        const blocking = mode === 'shared' ? others(EXCLUSIVE) : [...others(EXCLUSIVE), ...others('shared-')]
        if (blocking.length === 0) return
        if (mode === 'shared' || others(EXCLUSIVE).length > 0) break // back off and let the writer go
        if (Date.now() > deadline) throw new Error(`${service} tests still running after ${timeoutMs} ms`)
        await sleep(200)
      }
      rmSync(path, { force: true })
    }
    if (Date.now() > deadline) throw new Error(`could not take the ${service} test lock (${mode}) within ${timeoutMs} ms`)
    await sleep(200 + Math.random() * 200)
  }
}
