import { Type, type Static } from '@sinclair/typebox'
import { CHANNEL_ALPHABET, ChannelName } from '../auth/channels.js'

/**
 * Bodies of the publishing routes (docs/protocol.md, HTTP API), shared by the HTTP routes and the
 * Kafka consumer (docs/protocol.md, Kafka), so both ingresses accept exactly the same shapes.
 */
export const MAX_TARGETS = 1000

/** A number used as an id: an integer JSON carries exactly (±(2^53−1)). */
const SafeIntegerId = Type.Integer({ minimum: -Number.MAX_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER })

/**
 * Ids end up in channel names (`user:<id>`, `product:<id>`), so they obey the same alphabet.
 * A number is used as its decimal digits, so only integers JSON carries exactly are ids:
 * 1234567890123456789 arrives as 1234567890123456800, another user's id, and is refused.
 */
export const Id = (description: string) => Type.Union([
  Type.String({ minLength: 1, maxLength: 190, pattern: `^[${CHANNEL_ALPHABET}]+$` }),
  SafeIntegerId
], { description })

/**
 * A user as a token's `sub` names it, where no channel is named from it: the control routes
 * (disconnect, revoke) must reach every user who can connect, and a `sub` outside the channel
 * alphabet (`auth0|123`) connects (docs/protocol.md, "Tokens"). Any string, then, within a
 * length no real `sub` reaches; numbers as `Id`.
 */
export const SubjectId = (description: string) => Type.Union([
  Type.String({ minLength: 1, maxLength: 1024 }),
  SafeIntegerId
], { description })

export const EventType = Type.String({
  minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9_\\-:.]+$', description: 'event type, e.g. order:updated'
})
export const Payload = Type.Object({}, { additionalProperties: true, description: 'any JSON object' })

export const PublishBody = Type.Object({
  channel: ChannelName,
  type: EventType,
  payload: Payload
})

export const BroadcastBody = Type.Object({
  channels: Type.Array(ChannelName, { minItems: 1, maxItems: MAX_TARGETS }),
  type: EventType,
  payload: Payload
})

export const NotifyBody = Type.Object({
  userId: Type.Optional(Id('one recipient')),
  userIds: Type.Optional(Type.Array(Id('recipient'), { minItems: 1, maxItems: MAX_TARGETS })),
  type: Type.Optional(EventType),
  payload: Payload
})

export const OrderBody = Type.Object({
  userId: Id('the buyer'),
  orderId: Id('the order'),
  status: Type.String({ minLength: 1, maxLength: 100 }),
  previousStatus: Type.Optional(Type.String({ maxLength: 100 }))
}, { additionalProperties: true })

export const InventoryBody = Type.Object({
  productId: Id('the product'),
  stock: Type.Integer(),
  previousStock: Type.Optional(Type.Integer()),
  sku: Type.Optional(Type.String({ maxLength: 200 })),
  productName: Type.Optional(Type.String({ maxLength: 500 }))
}, { additionalProperties: true })

export const TestNotificationBody = Type.Object({
  userId: Id('the recipient'),
  title: Type.Optional(Type.String({ maxLength: 500 })),
  message: Type.String({ minLength: 1, maxLength: 10_000 })
})

export type PublishBody = Static<typeof PublishBody>
export type BroadcastBody = Static<typeof BroadcastBody>
export type NotifyBody = Static<typeof NotifyBody>
export type OrderBody = Static<typeof OrderBody>
export type InventoryBody = Static<typeof InventoryBody>
export type TestNotificationBody = Static<typeof TestNotificationBody>

/** Values of the Kafka topics (docs/protocol.md, Kafka) that have no HTTP twin. */
export const OrderCreatedMessage = Type.Object({
  orderId: Id('the order'),
  buyerId: Type.Optional(Id('the buyer')),
  userId: Type.Optional(Id('the buyer, when buyerId is absent')),
  total: Type.Optional(Type.Number()),
  currency: Type.Optional(Type.String({ maxLength: 10 })),
  items: Type.Optional(Type.Array(Type.Unknown())),
  createdAt: Type.Optional(Type.String())
}, { additionalProperties: true })

export const OrderUpdatedMessage = Type.Object({
  orderId: Id('the order'),
  buyerId: Type.Optional(Id('the buyer')),
  userId: Type.Optional(Id('the buyer, when buyerId is absent')),
  status: Type.String({ minLength: 1, maxLength: 100 }),
  previousStatus: Type.Optional(Type.String({ maxLength: 100 })),
  updatedAt: Type.Optional(Type.String())
}, { additionalProperties: true })

export const OrderCancelledMessage = Type.Object({
  orderId: Id('the order'),
  buyerId: Type.Optional(Id('the buyer')),
  userId: Type.Optional(Id('the buyer, when buyerId is absent')),
  reason: Type.Optional(Type.String({ maxLength: 1000 }))
}, { additionalProperties: true })

export const ProductMessage = Type.Object({
  productId: Id('the product'),
  name: Type.Optional(Type.String()),
  price: Type.Optional(Type.Number())
}, { additionalProperties: true })

export type OrderCreatedMessage = Static<typeof OrderCreatedMessage>
export type OrderUpdatedMessage = Static<typeof OrderUpdatedMessage>
export type OrderCancelledMessage = Static<typeof OrderCancelledMessage>
export type ProductMessage = Static<typeof ProductMessage>
