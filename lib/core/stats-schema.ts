import { Type } from '@sinclair/typebox'

/**
 * The body of GET /realtime/stats and of the WebSocket `stats` frame (docs/protocol.md, HTTP API / WebSocket),
 * as a schema: the HTTP route validates its reply with it and the AsyncAPI document
 * shows it, so both transports describe the same shape. Mirrors lib/ops/stats.ts.
 */
const UserConnections = Type.Array(Type.Object({ userId: Type.String(), connectionCount: Type.Integer() }))

export const NodeStatsSchema = Type.Object({
  nodeId: Type.String(),
  broker: Type.String(),
  startedAt: Type.String(),
  updatedAt: Type.String(),
  totalConnections: Type.Integer(),
  uniqueUsers: Type.Integer(),
  userConnections: UserConnections,
  channels: Type.Integer(),
  connectionsByTransport: Type.Object({ ws: Type.Integer(), sse: Type.Integer() })
})

export const ClusterStatsSchema = Type.Object({
  totalConnections: Type.Integer(),
  uniqueUsers: Type.Integer(),
  userConnections: UserConnections,
  channels: Type.Integer({ description: 'channels with at least one subscriber; with Redis, also those whose last subscriber left in the last 5 s, counted at most 2 s ago (docs/operations.md, "Channels linger")' }),
  nodes: Type.Array(NodeStatsSchema)
})
