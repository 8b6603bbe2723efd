/** A named dependency check for /health/ready: true when reachable. */
export type ReadinessCheck = () => boolean | Promise<boolean>

export interface ReadinessReport {
  ready: boolean
  checks: Record<string, 'ok' | 'unavailable'>
}

/** Every configured dependency registers a check; readiness is all of them passing. */
export class Readiness {
  private readonly checks = new Map<string, ReadinessCheck>()

  add (name: string, check: ReadinessCheck): void {
    this.checks.set(name, check)
  }

  async report (): Promise<ReadinessReport> {
    const checks: ReadinessReport['checks'] = {}
    let ready = true
    await Promise.all([...this.checks].map(async ([name, check]) => {
      let ok = false
      try { ok = await check() } catch { ok = false }
      checks[name] = ok ? 'ok' : 'unavailable'
      if (!ok) ready = false
    }))
    return { ready, checks }
  }
}
