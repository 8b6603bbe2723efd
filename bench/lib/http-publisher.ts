import { Agent, request } from 'node:http'

/**
 * A service publishing over the gateway's real HTTP path (POST /realtime/publish with a
 * service token), over a small keep-alive pool as a real service would use.
 */
export class HttpPublisher {
  private readonly agent: Agent
  failures = 0
  lastFailure = ''

  constructor (private readonly port: number, private readonly token: string, readonly poolSize = 16) {
    this.agent = new Agent({ keepAlive: true, maxSockets: poolSize })
  }

  /** One publish; resolves (never rejects) when answered or failed, counting failures. */
  publish (body: unknown, headers: Record<string, string> = {}): Promise<void> {
    const payload = JSON.stringify(body)
    return new Promise((resolve) => {
      const req = request({
        host: '127.0.0.1',
        port: this.port,
        method: 'POST',
        path: '/realtime/publish',
        agent: this.agent,
        timeout: 10_000,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(payload),
          authorization: `Bearer ${this.token}`,
          ...headers
        }
      }, (res) => {
        res.resume()
        res.on('end', () => {
          if (res.statusCode !== 202) this.fail(`HTTP ${res.statusCode}`)
          resolve()
        })
      })
      req.on('timeout', () => req.destroy(new Error('timeout')))
      req.on('error', (err) => {
        this.fail(err.message)
        resolve()
      })
      req.end(payload)
    })
  }

  /** `count` publishes with at most poolSize in flight. */
  async burst (count: number, body: (i: number) => unknown, headers?: (i: number) => Record<string, string>): Promise<void> {
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < count) {
        const i = next++
        await this.publish(body(i), headers?.(i))
      }
    }
    await Promise.all(Array.from({ length: Math.min(this.poolSize, count) }, worker))
  }

  close (): void {
    this.agent.destroy()
  }

  private fail (why: string): void {
    this.failures++
    this.lastFailure = why
  }
}
