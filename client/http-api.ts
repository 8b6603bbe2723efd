import type { RealtimeEvent } from './options.js'
import type { Position } from './positions.js'

/** The gateway's reading routes (docs/protocol.md, HTTP API), as the client calls them. */

export interface HistoryOptions {
  /** The events after this offset (or position, whose epoch is then sent too). */
  since?: number | Position
  /** The epoch of `since`; default the channel's current one. */
  epoch?: string
  /** At most this many events (default and most: the channel's history size). */
  limit?: number
}

export interface HistoryPage {
  channel: string
  /** Oldest first. */
  events: RealtimeEvent[]
  /** The channel's latest position. */
  position: Position
  /** False when the history no longer holds every event after `since`: reload instead. */
  recovered: boolean
}

export interface PresenceCounts {
  channel: string
  connections: number
  users: number
  /** Only from the HTTP route (admins and services). */
  userIds?: string[]
}

/** A refused or failed HTTP call: `status`, and `code` as the WebSocket errors name it. */
export interface HttpError extends Error {
  status: number
  code: string
}

const CODES: Record<number, string> = { 400: 'bad_request', 401: 'unauthorized', 403: 'forbidden', 429: 'rate_limited' }

export async function getJson (fetchImpl: typeof fetch, url: string, token: string | undefined, signal?: AbortSignal): Promise<any> {
  const headers: Record<string, string> = { accept: 'application/json' }
  if (token !== undefined && token !== '') headers.authorization = `Bearer ${token}`
  const res = await fetchImpl(url, signal === undefined ? { headers } : { headers, signal })
  const text = await res.text()
  let body: any
  try { body = JSON.parse(text) } catch { /* not JSON */ }
  if (res.ok) return body
  const message = typeof body?.message === 'string' ? body.message : `HTTP ${res.status}`
  const err = new Error(message) as HttpError
  err.status = res.status
  err.code = CODES[res.status] ?? 'http_error'
  throw err
}

export function historyUrl (base: string, channel: string, options: HistoryOptions): string {
  const query = new URLSearchParams()
  const since = options.since
  if (since !== undefined) query.set('since', String(typeof since === 'number' ? since : since.offset))
  const epoch = options.epoch ?? (typeof since === 'object' ? since.epoch : undefined)
  if (epoch !== undefined) query.set('epoch', epoch)
  if (options.limit !== undefined) query.set('limit', String(options.limit))
  const search = query.toString()
  return `${base}/realtime/history/${encodeURIComponent(channel)}${search === '' ? '' : '?' + search}`
}

export const presenceUrl = (base: string, channel: string): string => `${base}/realtime/presence/${encodeURIComponent(channel)}`

/**
 * A channel's last `limit` events and the position they end at, read from the history route:
 * what `rewind` shows of a channel that a stream then resumes from that position (the seam
 * of any resume; only events published after the read are left to the stream, so one
 * published meanwhile cannot push the resume point out of a short history). A `limit` above
 * the channel's own history size is a 400: then the channel's whole history is read, and its
 * last `limit` kept (what `rewind` over WebSocket gives; `limit` is a whole number of at
 * least 1, checked by the caller).
 */
export async function rewindPage (fetchImpl: typeof fetch, base: string, channel: string, limit: number, token: string | undefined, signal?: AbortSignal): Promise<{ events: RealtimeEvent[], position: Position }> {
  let page: HistoryPage
  try {
    page = await getJson(fetchImpl, historyUrl(base, channel, { limit }), token, signal)
  } catch (err) {
    // Only the limit's own refusal ("limit: must be an integer from 1 to <size> for <channel>").
    if ((err as HttpError).status !== 400 || !(err as HttpError).message.startsWith('limit:')) throw err
    page = await getJson(fetchImpl, historyUrl(base, channel, {}), token, signal)
  }
  const events = page.events.slice(-limit)
  const last = events[events.length - 1] as RealtimeEvent | undefined
  return { events, position: last === undefined ? page.position : { offset: last.offset, epoch: page.position.epoch } }
}
