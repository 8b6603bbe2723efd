import { orderEvents, productEvents } from '../lib/ingress/commerce-events.js'
import type { EventDraft } from '../lib/core/event.js'

/**
 * A small shop that keeps the gateway busy for `npm run demo`: orders move
 * created → paid → shipped → delivered (some are cancelled), each order takes stock
 * (some products fall to the low-stock threshold and are restocked later), and prices
 * change now and then. Status changes and stock go through the HTTP API, as a shop
 * backend would call it; order creation, cancellation and product changes have no HTTP
 * route (they arrive over Kafka in production), so they go to the broker with the
 * same mapping the Kafka consumer uses.
 */
export interface ShopChannels {
  /** POST a JSON body to a gateway route (with a service token); rejects on a non-2xx. */
  post(route: string, body: object): Promise<void>
  /** Publish drafts straight to the broker, as the Kafka consumer does. */
  publish(drafts: EventDraft[]): Promise<void>
  /** One line of progress or trouble. */
  log(line: string): void
}

export interface ShopOptions {
  /** Divides every delay: 1 is real time, tests run faster. */
  speed?: number
  /** Who receives the occasional notification (the admin watching the dashboard). */
  adminUserId?: string
  /** The storefront's shopper: places about one order in eight, so its page gets order notices. */
  shopperUserId?: string
  random?: () => number
}

interface Product { id: string, sku: string, name: string, price: number, stock: number, weight: number }

const CATALOG: Array<Omit<Product, 'stock'> & { stock: number }> = [
  { id: 'p-100', sku: 'MUG-BLU', name: 'Blue ceramic mug', price: 14, stock: 9, weight: 3 },
  { id: 'p-101', sku: 'TEE-BLK-M', name: 'Black T-shirt (M)', price: 22, stock: 8, weight: 3 },
  { id: 'p-102', sku: 'BTL-STL', name: 'Steel water bottle', price: 27, stock: 30, weight: 2 },
  { id: 'p-103', sku: 'NB-A5', name: 'A5 notebook', price: 9.5, stock: 40, weight: 2 },
  { id: 'p-104', sku: 'HDP-WL', name: 'Wireless headphones', price: 89, stock: 16, weight: 1 },
  { id: 'p-105', sku: 'CAB-USBC', name: 'USB-C cable 2 m', price: 12, stock: 35, weight: 2 },
  { id: 'p-106', sku: 'LMP-DSK', name: 'Desk lamp', price: 39, stock: 18, weight: 1 },
  { id: 'p-107', sku: 'BAG-TOTE', name: 'Canvas tote bag', price: 18, stock: 25, weight: 1 },
  { id: 'p-108', sku: 'PEN-GEL3', name: 'Gel pens (3-pack)', price: 6, stock: 45, weight: 2 },
  { id: 'p-109', sku: 'PLT-SUC', name: 'Succulent in pot', price: 16, stock: 12, weight: 1 }
]

const CANCEL_REASONS = ['payment declined', 'customer request', 'address not deliverable']
const NOTICES = [
  { title: 'Daily target', message: 'Revenue passed today\'s target.' },
  { title: 'New review', message: 'A 5-star review was posted for "Desk lamp".' },
  { title: 'Supplier update', message: 'The next mug shipment arrives on Friday.' }
]

export class ShopSimulator {
  readonly counts = { orders: 0, cancelled: 0, delivered: 0, stockUpdates: 0, restocks: 0, priceChanges: 0, failures: 0 }
  private readonly products: Product[] = CATALOG.map((p) => ({ ...p }))
  private readonly timers = new Set<ReturnType<typeof setTimeout>>()
  private readonly inFlight = new Set<Promise<void>>()
  private readonly speed: number
  private readonly random: () => number
  private nextOrder = 1001
  private running = false

  constructor (private readonly channels: ShopChannels, private readonly options: ShopOptions = {}) {
    this.speed = options.speed ?? 1
    this.random = options.random ?? Math.random
  }

  /** Product ids, in catalog order. */
  static readonly productIds = CATALOG.map((p) => p.id)

  start (): void {
    if (this.running) return
    this.running = true
    // Every product's state first, so a product page (rewind: 1) has it from the start.
    for (const product of this.products) this.run(this.channels.publish(productEvents('updated', this.stateOf(product))))
    this.every(1200, 500, () => this.placeOrder())
    this.every(15_000, 5000, () => this.changePrice())
    if (this.options.adminUserId !== undefined) this.every(40_000, 10_000, () => this.notifyAdmin())
  }

  stop (): void {
    this.running = false
    for (const timer of this.timers) clearTimeout(timer)
    this.timers.clear()
  }

  /** Resolves once every publish already started has been answered (after stop(): all of them). */
  async settled (): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight])
  }

  private placeOrder (): void {
    const orderId = `ord-${this.nextOrder++}`
    const shopper = this.options.shopperUserId
    const userId = shopper !== undefined && this.random() < 0.125 ? shopper : `u-${1 + Math.floor(this.random() * 60)}`
    const items = this.pickItems()
    const total = Math.round(items.reduce((sum, i) => sum + i.price * i.quantity, 0) * 100) / 100
    const order = { orderId, userId, total, currency: 'USD' }
    this.counts.orders++
    this.run(this.channels.publish(orderEvents('created', {
      ...order, buyerId: userId, items, createdAt: new Date().toISOString()
    })))
    for (const item of items) this.takeStock(item.productId, item.quantity)

    if (this.random() < 0.1) {
      return this.later(2000, 3000, () => this.cancel(order, 'created', CANCEL_REASONS[0]))
    }
    this.later(2000, 3000, () => {
      this.updateOrder(order, 'paid', 'created')
      if (this.random() < 0.04) return this.later(3000, 4000, () => this.cancel(order, 'paid', CANCEL_REASONS[1 + Math.floor(this.random() * 2)]))
      this.later(4000, 6000, () => {
        this.updateOrder(order, 'shipped', 'paid')
        this.later(8000, 8000, () => {
          this.updateOrder(order, 'delivered', 'shipped')
          this.counts.delivered++
        })
      })
    })
  }

  private pickItems (): Array<{ productId: string, sku: string, name: string, price: number, quantity: number }> {
    const count = 1 + Math.floor(this.random() * 2.2)
    const picked = new Map<string, { productId: string, sku: string, name: string, price: number, quantity: number }>()
    const totalWeight = this.products.reduce((sum, p) => sum + p.weight, 0)
    for (let i = 0; i < count; i++) {
      let r = this.random() * totalWeight
      const product = this.products.find((p) => (r -= p.weight) < 0) ?? this.products[0]
      const line = picked.get(product.id) ?? { productId: product.id, sku: product.sku, name: product.name, price: product.price, quantity: 0 }
      line.quantity += 1
      picked.set(product.id, line)
    }
    return [...picked.values()]
  }

  private takeStock (productId: string, quantity: number): void {
    const product = this.products.find((p) => p.id === productId)
    if (product === undefined || product.stock === 0) return
    const previousStock = product.stock
    product.stock = Math.max(0, product.stock - quantity)
    this.postStock(product, previousStock)
    // Restock once it runs low, after a while, so alerts come and go.
    if (product.stock <= 2 && previousStock > 2) {
      this.later(15_000, 10_000, () => {
        const before = product.stock
        product.stock += 25 + Math.floor(this.random() * 20)
        this.counts.restocks++
        this.postStock(product, before)
      })
    }
  }

  private postStock (product: Product, previousStock: number): void {
    this.counts.stockUpdates++
    // The price rides along: every event of a product channel carries the product's whole
    // state, so the channel's latest event (rewind: 1) is all a product page needs.
    this.run(this.channels.post('/realtime/broadcast/inventory', {
      productId: product.id, sku: product.sku, productName: product.name, stock: product.stock, previousStock, price: product.price, currency: 'USD'
    }))
  }

  private updateOrder (order: { orderId: string, userId: string, total: number, currency: string }, status: string, previousStatus: string): void {
    if (!this.running) return
    this.run(this.channels.post('/realtime/broadcast/order', { ...order, status, previousStatus }))
  }

  private cancel (order: { orderId: string, userId: string, total: number, currency: string }, previousStatus: string, reason: string): void {
    this.counts.cancelled++
    this.run(this.channels.publish(orderEvents('cancelled', { ...order, buyerId: order.userId, status: 'cancelled', previousStatus, reason })))
  }

  private changePrice (): void {
    const product = this.products[Math.floor(this.random() * this.products.length)]
    const factor = 0.9 + this.random() * 0.2
    product.price = Math.max(1, Math.round(product.price * factor * 2) / 2)
    this.counts.priceChanges++
    this.run(this.channels.publish(productEvents('updated', this.stateOf(product))))
  }

  private stateOf (product: Product): { productId: string, sku: string, name: string, price: number, currency: string, stock: number } {
    return { productId: product.id, sku: product.sku, name: product.name, price: product.price, currency: 'USD', stock: product.stock }
  }

  private notifyAdmin (): void {
    const notice = NOTICES[Math.floor(this.random() * NOTICES.length)]
    this.run(this.channels.post('/realtime/test/notification', { userId: this.options.adminUserId as string, ...notice }))
  }

  /** Runs `fn` every `ms` to `ms + jitterMs` until stopped. */
  private every (ms: number, jitterMs: number, fn: () => void): void {
    this.later(ms, jitterMs, () => {
      fn()
      this.every(ms, jitterMs, fn)
    })
  }

  /** Runs `fn` once after `ms` plus up to `spreadMs`, scaled by the speed. */
  private later (ms: number, spreadMs: number, fn: () => void): void {
    if (!this.running) return
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      if (this.running) fn()
    }, (ms + this.random() * spreadMs) / this.speed)
    this.timers.add(timer)
  }

  private run (work: Promise<void>): void {
    const tracked = work.catch((err: unknown) => {
      this.counts.failures++
      this.channels.log(`simulator: a publish failed: ${err instanceof Error ? err.message : String(err)}`)
    }).finally(() => this.inFlight.delete(tracked))
    this.inFlight.add(tracked)
  }
}
