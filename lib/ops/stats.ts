import type { LocalStats } from '../hub/hub.js'

/** What one instance reports about itself (docs/protocol.md, HTTP API `nodes`). */
export interface NodeStats extends LocalStats {
  nodeId: string
  broker: string
  startedAt: string
  updatedAt: string
}

export interface ClusterStats {
  totalConnections: number
  uniqueUsers: number
  userConnections: Array<{ userId: string, connectionCount: number }>
  /** Distinct channels with at least one subscriber on some instance. */
  channels: number
  nodes: NodeStats[]
}

/**
 * Sums nodes into the stats of GET /realtime/stats. Users connected to several nodes
 * count once in uniqueUsers, with their connections added up. `channels` sums per-node
 * counts when channel lists are not shared (an upper bound across nodes).
 */
export function mergeNodeStats (nodes: readonly NodeStats[], distinctChannels?: number): ClusterStats {
  const perUser = new Map<string, number>()
  let totalConnections = 0
  let channels = 0
  for (const node of nodes) {
    totalConnections += node.totalConnections
    channels += node.channels
    for (const { userId, connectionCount } of node.userConnections) {
      perUser.set(userId, (perUser.get(userId) ?? 0) + connectionCount)
    }
  }
  return {
    totalConnections,
    uniqueUsers: perUser.size,
    userConnections: [...perUser].map(([userId, connectionCount]) => ({ userId, connectionCount })),
    channels: distinctChannels ?? channels,
    nodes: [...nodes]
  }
}
