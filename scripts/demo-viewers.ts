import WebSocket from 'ws'
import { connect, type RealtimeClient } from '../client/realtime-client.js'

/**
 * Simulated shoppers for `npm run demo`: real connections through the gateway's own
 * browser client (some over SSE), each on one product page (`rewind: 1`, as the
 * storefront does). They come and go, so the storefront's viewer count and the
 * dashboard's connection figures move.
 */
export interface CrowdOptions {
  /** The gateway's base URL. */
  url: string
  /** A token for a simulated shopper. */
  tokenFor(userId: string): string
  /** Product ids; the first one (the storefront's) gets most viewers. */
  products: string[]
  /** Viewers kept between these bounds. */
  min?: number
  max?: number
  /** Share of viewers on SSE. */
  sseShare?: number
  /** Divides every delay: 1 is real time, tests run faster. */
  speed?: number
  random?: () => number
}

export class ViewerCrowd {
  private readonly viewers: RealtimeClient[] = []
  private timer: ReturnType<typeof setTimeout> | undefined
  private running = false
  private readonly random: () => number

  constructor (private readonly options: CrowdOptions) {
    this.random = options.random ?? Math.random
  }

  get size (): number {
    return this.viewers.length
  }

  start (): void {
    if (this.running) return
    this.running = true
    const { min = 4, max = 14 } = this.options
    for (let i = 0; i < Math.round((min + max) / 2); i++) this.arrive()
    this.schedule()
  }

  stop (): void {
    this.running = false
    clearTimeout(this.timer)
    for (const viewer of this.viewers.splice(0)) viewer.close()
  }

  private schedule (): void {
    const delay = (1500 + this.random() * 2500) / (this.options.speed ?? 1)
    this.timer = setTimeout(() => {
      if (!this.running) return
      const { min = 4, max = 14 } = this.options
      const leave = this.viewers.length >= max || (this.viewers.length > min && this.random() < 0.5)
      if (leave) this.leave()
      else this.arrive()
      this.schedule()
    }, delay)
  }

  private arrive (): void {
    const { products, sseShare = 1 / 3 } = this.options
    const product = this.random() < 0.6 ? products[0] : products[Math.floor(this.random() * products.length)]
    const userId = `u-${1 + Math.floor(this.random() * 60)}`
    const viewer = connect({
      url: this.options.url,
      WebSocket,
      token: () => this.options.tokenFor(userId),
      channels: [`product:${product}`],
      rewind: 1,
      transports: this.random() < sseShare ? ['sse'] : ['ws', 'sse']
    })
    this.viewers.push(viewer)
  }

  private leave (): void {
    const viewer = this.viewers.splice(Math.floor(this.random() * this.viewers.length), 1)[0]
    viewer?.close()
  }
}
