import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { type Static, Type, type TSchema } from '@sinclair/typebox'
import {
  broadcastEvents, inventoryEvents, notificationEvents, notifyEvents, orderEvents, publishEvents
} from '../lib/ingress/commerce-events.js'
import type { EventDraft } from '../lib/core/event.js'
import type { IdempotencyClaim } from '../lib/broker/broker.js'
import { requireIdentity } from '../lib/auth/identity.js'
import {
  BroadcastBody, InventoryBody, NotifyBody, OrderBody, PublishBody, TestNotificationBody
} from '../lib/ingress/ingress-schemas.js'
import { fingerprintOf, headerValues, idempotencyKeyOf, scopeOf, withDedupe } from '../lib/ingress/idempotency.js'
import { checkDrafts } from '../lib/ingress/publish-limits.js'
import { publishAll, receiptOf } from '../lib/ingress/publisher.js'
import { ErrorReply, Position } from './schemas.js'

const Receipt = Type.Object({
  positions: Type.Record(Type.String(), Position, { description: 'per channel, the position of its last event from this publish' }),
  events: Type.Array(Type.Object({ channel: Type.String(), type: Type.String(), offset: Type.Integer(), epoch: Type.String() }))
})

/** One publishing route: its body schema, and how a body of that schema becomes drafts. */
interface PublishRoute<S extends TSchema> {
  url: string
  summary: string
  body: S
  events: (body: Static<S>, lowStockThreshold: number) => EventDraft[]
  /** Where the event payload sits in the body ('' when the body's own fields are the payload), for 400/413 messages. */
  payloadField: string
}

/**
 * The publishing routes (docs/protocol.md, HTTP API). Each maps its body to event drafts with the
 * shared mapping functions and answers 202 only once the broker took every event.
 */
const publishRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const limits = { eventMaxBytes: app.config.EVENT_MAX_BYTES, publishMaxBytes: app.config.PUBLISH_MAX_BYTES }

  /** Registers one route; generic so each handler's body is typed by its own schema. */
  function publishRoute<S extends TSchema> (route: PublishRoute<S>): void {
    app.post(route.url, {
      onRequest: app.requireServiceOrAdmin,
      schema: {
        summary: route.summary,
        tags: ['publish'],
        security: [{ bearerAuth: [] }],
        body: route.body,
        headers: Type.Object({
          'idempotency-key': Type.Optional(Type.String({
            description: 'makes the publish idempotent per caller for IDEMPOTENCY_TTL_SECONDS: a repeat publishes nothing and answers the first 202 body (header Idempotent-Replayed: true); the same key with another body: 422'
          }))
        }),
        response: {
          202: Receipt, 400: ErrorReply, 401: ErrorReply, 403: ErrorReply, 413: ErrorReply, 415: ErrorReply, 422: ErrorReply, 429: ErrorReply, 503: ErrorReply
        }
      }
    }, async (request, reply) => {
      let drafts = route.events(request.body, app.config.LOW_STOCK_THRESHOLD)
      checkDrafts(drafts, limits, route.payloadField)
      const key = idempotencyKeyOf(headerValues(request.raw.rawHeaders, 'idempotency-key'))
      let claim: IdempotencyClaim | undefined
      if (key !== undefined) {
        const scope = scopeOf(requireIdentity(request.identity).userId, key)
        claim = { scope, fingerprint: fingerprintOf(route.url, request.body) }
        drafts = withDedupe(drafts, scope)
      }
      // Another body with the key: IdempotencyConflictError, a 422 (plugins/error-handler.ts).
      const events = await publishAll(app.hub, drafts, claim)
      const replayed = events.filter((e) => e.replayed === true).length
      app.gatewayMetrics.eventsPublished.inc({ source: 'http' }, events.length - replayed)
      if (key !== undefined && replayed === events.length) {
        // Nothing new: the first request's receipt, again.
        reply.header('idempotent-replayed', 'true')
        app.gatewayMetrics.idempotentReplays.inc({ source: 'http' })
      }
      return await reply.code(202).send(receiptOf(events))
    })
  }

  publishRoute({ url: '/realtime/publish', summary: 'Publish one event to one channel', body: PublishBody, events: publishEvents, payloadField: 'payload' })
  publishRoute({ url: '/realtime/broadcast', summary: 'Publish one event to each of several channels', body: BroadcastBody, events: broadcastEvents, payloadField: 'payload' })
  publishRoute({ url: '/realtime/notify', summary: 'Notify one or more users on user:<id>', body: NotifyBody, events: notifyEvents, payloadField: 'payload' })
  publishRoute({ url: '/realtime/broadcast/order', summary: 'Order status change to the buyer and the admins', body: OrderBody, events: (b) => orderEvents('updated', b), payloadField: '' })
  publishRoute({ url: '/realtime/broadcast/inventory', summary: 'Stock change to the product, inventory and admins (low-stock alert)', body: InventoryBody, events: inventoryEvents, payloadField: '' })
  publishRoute({ url: '/realtime/test/notification', summary: 'Send a test notification to a user', body: TestNotificationBody, events: notificationEvents, payloadField: '' })
}

export default publishRoutes
