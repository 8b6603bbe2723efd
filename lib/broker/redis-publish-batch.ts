import type { EventDraft } from '../core/event.js'
import type { IdempotencyClaim } from './broker.js'
import { newEpochBase } from './epochs.js'
import type { ChannelHistory, HistoryPolicy } from './history-policy.js'
import { entryBody, type RedisLayout } from './redis-layout.js'

/** What PUBLISH_BATCH_SCRIPT answers for each event: {epoch, offset, ms, replayed (1: a dedupe key seen before)}. */
export type PublishReply = [string, number, string, number]

/**
 * Splits a batch by cluster slot, keeping the drafts' order within each part (so each
 * channel's, whose keys share a slot); on one Redis it is one part. Each part is one script
 * run: on a cluster a batch spanning several shards is several runs, each all or nothing.
 */
export function groupBySlot<T extends { channel: string }> (drafts: readonly T[], layout: RedisLayout): Array<{ drafts: T[], indexes: number[] }> {
  if (!layout.clustered) return [{ drafts: [...drafts], indexes: drafts.map((_, i) => i) }]
  const groups = new Map<number, { drafts: T[], indexes: number[] }>()
  drafts.forEach((draft, i) => {
    const slot = layout.slotOfChannel(draft.channel)
    let group = groups.get(slot)
    if (group === undefined) groups.set(slot, group = { drafts: [], indexes: [] })
    group.drafts.push(draft)
    group.indexes.push(i)
  })
  return [...groups.values()]
}

/**
 * The KEYS and ARGV of one PUBLISH_BATCH_SCRIPT call (lib/broker/redis-layout.ts), for one
 * event or many: what a channel's events share (keys, history settings, pub/sub name) once
 * per channel, a source's mark once (with where its log ends now and what it may read to be
 * set aside: DraftOrigin.movedMarks, by mark key; `markKeys` name them), then each event's
 * channel number, body, dedupe key and mark numbers and origin. `bodies` are the events'
 * entry bodies, in order (the entry Redis keeps is `epoch,offset,ms,body`: RedisBroker
 * remembers its own without encoding them again).
 */
export function publishBatchArgs (
  drafts: readonly EventDraft[], layout: RedisLayout, policy: HistoryPolicy, retentionOf: (history: ChannelHistory) => number,
  dedupeTtlSeconds: number, claim?: IdempotencyClaim
): { keys: string[], args: Array<string | number>, bodies: string[], markKeys: string[] } {
  // On a cluster the caller passes drafts of one slot (RedisBroker.publishBatch groups them).
  const keys: string[] = [layout.baseKeyOf(drafts[0].channel)]
  const channelArgs: Array<string | number> = []
  const eventArgs: Array<string | number> = []
  const channels = new Map<string, number>()
  const marks = new Map<string, number>()
  /** Per mark, where its source's log ends now (-1: not known) and what it may read to be set aside ('': nothing). */
  const markArgs: Array<string | number> = []
  const dedupeKeys: string[] = []
  const bodies: string[] = []
  // Drafts the ingress did not measure (the broker API): a payload shared by several is encoded once.
  let encoded: Map<object, string> | undefined
  for (const draft of drafts) {
    let c = channels.get(draft.channel)
    if (c === undefined) {
      channels.set(draft.channel, c = channels.size + 1)
      const channel = layout.keys(draft.channel)
      const history = policy.of(draft.channel)
      keys.push(channel.meta, channel.history)
      channelArgs.push(history.size, history.ttlSeconds, retentionOf(history), channel.pubsub)
    }
    let m = 0
    const origin = draft.origin
    if (origin !== undefined) {
      const markKey = layout.originKey(origin.source, draft.channel)
      m = marks.get(markKey) ?? 0
      if (m === 0) {
        marks.set(markKey, m = marks.size + 1)
        markArgs.push(origin.logEnd ?? -1, origin.movedMarks?.get(markKey) ?? '')
      }
    }
    let d = 0
    if (draft.dedupe !== undefined) d = dedupeKeys.push(layout.dedupeKey(draft.channel, draft.dedupe))
    let payloadJson = draft.payloadJson
    if (payloadJson === undefined) {
      encoded ??= new Map()
      payloadJson = encoded.get(draft.payload)
      if (payloadJson === undefined) encoded.set(draft.payload, payloadJson = JSON.stringify(draft.payload))
    }
    const body = entryBody(draft.type, payloadJson)
    bodies.push(body)
    eventArgs.push(c, body, d, m, origin?.offset ?? -1, origin?.index ?? 0)
  }
  const markKeys = [...marks.keys()]
  for (const markKey of markKeys) keys.push(markKey)
  for (const dedupeKey of dedupeKeys) keys.push(dedupeKey)
  if (claim !== undefined) keys.push(layout.claimKey(claim.scope))
  return { keys, args: [newEpochBase(), dedupeTtlSeconds, channels.size, marks.size, claim?.fingerprint ?? '', ...channelArgs, ...markArgs, ...eventArgs], bodies, markKeys }
}

/**
 * The marks a run found past where their source's log ends ({'moved', m, text, …}), by key;
 * undefined when the run published.
 */
export function movedMarksOf (flat: ReadonlyArray<string | number>, markKeys: readonly string[]): Map<string, string> | undefined {
  if (flat[0] !== 'moved') return undefined
  const moved = new Map<string, string>()
  for (let i = 1; i < flat.length; i += 2) moved.set(markKeys[Number(flat[i]) - 1], String(flat[i + 1]))
  return moved
}

/** Event `i`'s reply in the script's flat answer (four values per event). */
export function replyAt (flat: ReadonlyArray<string | number>, i: number): PublishReply {
  return [String(flat[4 * i]), Number(flat[4 * i + 1]), String(flat[4 * i + 2]), Number(flat[4 * i + 3])]
}
