import { type KafkaTopic, mapKafkaMessage } from '../../lib/ingress/kafka-mapping.js'

/**
 * The Kafka benchmark's traffic: a shop's mix over every topic of docs/protocol.md, Kafka, made
 * deterministically from a message's index, and what the gateway must make of it
 * (computed with the gateway's own mapping, so the bench checks delivery, not mapping).
 */

/** Who the traffic is about: every channel it reaches has one subscribed bench client. */
export const USERS = 200
export const PRODUCTS = 100
export const ROOMS = 10
export const LOW_STOCK_THRESHOLD = 5
/** One message in this many is poison (not JSON): it goes to the DLQ, consumption goes on. */
export const POISON_EVERY = 2000

/** Relative weights of the topics: orders and stock dominate a shop's stream. */
const WEIGHTS: Array<[KafkaTopic, number]> = [
  ['order.created', 14], ['order.updated', 22], ['order.cancelled', 3], ['inventory.updated', 20],
  ['product.created', 2], ['product.updated', 9], ['notification.created', 10], ['realtime.publish', 20]
]
const TOTAL_WEIGHT = WEIGHTS.reduce((s, [, w]) => s + w, 0)
const STATUSES = ['created', 'paid', 'packed', 'shipped', 'delivered']

export interface MixMessage {
  topic: KafkaTopic
  key: string
  value: string
}

/** A small fast hash of the index (splitmix32), so the mix is the same on every run. */
function hash (i: number, salt: number): number {
  let z = (i * 0x9e3779b9 + salt * 0x85ebca6b) | 0
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
  return (z ^ (z >>> 16)) >>> 0
}

function topicOf (i: number): KafkaTopic {
  let r = hash(i, 1) % TOTAL_WEIGHT
  for (const [topic, weight] of WEIGHTS) {
    if (r < weight) return topic
    r -= weight
  }
  return 'realtime.publish'
}

/**
 * Message `i` of the mix. `sentAt` (bench/lib/clock.ts `now()` at send) rides in every
 * value that reaches a client, for produce-to-receive latency.
 */
export function mixMessage (i: number, sentAt: number): MixMessage {
  const topic = topicOf(i)
  const user = `u${hash(i, 2) % USERS}`
  const product = `p${hash(i, 3) % PRODUCTS}`
  const order = `o${hash(i, 4) % 50_000}`
  if (i % POISON_EVERY === POISON_EVERY - 1) return { topic, key: order, value: `{"orderId":"${order}", "buyerId": ` }
  const when = new Date(1_700_000_000_000 + i * 1000).toISOString()
  switch (topic) {
    case 'order.created':
      return {
        topic,
        key: order,
        value: JSON.stringify({
          orderId: order,
          buyerId: user,
          total: 19.9 + (i % 50),
          currency: 'EUR',
          items: [{ sku: `SKU-${product}`, quantity: 1 + (i % 3), price: 9.95 }],
          createdAt: when,
          sentAt
        })
      }
    case 'order.updated': {
      const s = hash(i, 5) % (STATUSES.length - 1)
      return {
        topic,
        key: order,
        value: JSON.stringify({ orderId: order, buyerId: user, status: STATUSES[s + 1], previousStatus: STATUSES[s], updatedAt: when, sentAt })
      }
    }
    case 'order.cancelled':
      return { topic, key: order, value: JSON.stringify({ orderId: order, buyerId: user, reason: 'changed my mind', sentAt }) }
    case 'inventory.updated': {
      const stock = hash(i, 6) % 40
      return {
        topic,
        key: product,
        value: JSON.stringify({ productId: product, stock, previousStock: stock + 1, sku: `SKU-${product}`, productName: `Product ${product}`, sentAt })
      }
    }
    case 'product.created':
    case 'product.updated':
      return { topic, key: product, value: JSON.stringify({ productId: product, name: `Product ${product}`, price: 5 + (i % 200) / 4, sentAt }) }
    case 'notification.created':
      return { topic, key: user, value: JSON.stringify({ userId: user, title: 'Your order', message: `Order ${order} has news`, sentAt }) }
    case 'realtime.publish': {
      const kind = hash(i, 7) % 10
      const room = `room:r${hash(i, 8) % ROOMS}`
      if (kind < 6) return { topic, key: room, value: JSON.stringify({ channel: room, type: 'room:message', payload: { text: `message ${i}`, sentAt } }) }
      if (kind < 8) {
        const other = `room:r${(hash(i, 8) + 1) % ROOMS}`
        return { topic, key: room, value: JSON.stringify({ channels: [room, other], type: 'room:score', payload: { home: i % 5, away: i % 3, sentAt } }) }
      }
      return { topic, key: user, value: JSON.stringify({ userId: user, type: 'ping', payload: { n: i, sentAt } }) }
    }
  }
}

/** Every channel the mix can reach, grouped by who may subscribe to it (docs/protocol.md, Channels). */
export function mixChannels (): { users: string[], admin: string[], public: string[] } {
  return {
    users: Array.from({ length: USERS }, (_, k) => `u${k}`),
    admin: ['admin', 'orders'],
    public: ['inventory', 'products', ...Array.from({ length: PRODUCTS }, (_, k) => `product:p${k}`),
      ...Array.from({ length: ROOMS }, (_, k) => `room:r${k}`)]
  }
}

/** What the gateway must deliver for messages [from, to): events per channel, and how many go to the DLQ. */
export interface Expected {
  messages: number
  events: number
  dlq: number
  perChannel: Record<string, number>
}

export function emptyExpected (): Expected {
  return { messages: 0, events: 0, dlq: 0, perChannel: {} }
}

/** Adds one message's outcome, as the gateway's own mapping sees it. */
export function expect (expected: Expected, message: MixMessage): void {
  expected.messages++
  const result = mapKafkaMessage(message.topic, Buffer.from(message.value), { lowStockThreshold: LOW_STOCK_THRESHOLD })
  if (!result.ok) {
    expected.dlq++
    return
  }
  for (const draft of result.drafts) {
    expected.events++
    expected.perChannel[draft.channel] = (expected.perChannel[draft.channel] ?? 0) + 1
  }
}
