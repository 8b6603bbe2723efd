import type { Test } from 'tap'
import WebSocket from 'ws'
import { connect, type ConnectOptions, type RealtimeClient, type RealtimeEvent } from '../../client/realtime-client.js'
import { post, serviceToken, sleep } from './helper.js'

/** The browser client (client/) run in Node by the tests, with everything it emits recorded. */

export interface Watched {
  client: RealtimeClient
  events: RealtimeEvent[]
  states: string[]
  recoveries: Array<{ recovered: boolean, channels: string[], reset?: boolean, gap?: { after: number, next: number } }>
  errors: Array<{ code: string, status?: number }>
  opens: Array<{ transport: string, resumed: boolean, channels: string[] }>
  presences: Array<{ channel: string, connections: number, users: number }>
  disconnects: Array<{ code: number, reason: string, willReconnect: boolean }>
  /** Resolves once `done()` holds; rejects after `timeoutMs` naming what it waited for. */
  until(what: string, done: () => boolean, timeoutMs?: number): Promise<void>
  on(channel: string): RealtimeEvent[]
}

export function watch (t: Test, options: ConnectOptions): Watched {
  const client = connect({ WebSocket, backoff: { initialMs: 100, maxMs: 1000 }, ...options })
  t.teardown(() => client.close())
  const w: Watched = {
    client,
    events: [],
    states: [],
    recoveries: [],
    errors: [],
    opens: [],
    presences: [],
    disconnects: [],
    async until (what, done, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs
      while (!done()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; states ${w.states.join(',')}; events ${JSON.stringify(w.events).slice(0, 400)}`)
        await sleep(10)
      }
    },
    on: (channel) => w.events.filter((e) => e.channel === channel)
  }
  client.on('*', (e) => w.events.push(e))
  client.on('state', (s) => w.states.push(s.state))
  client.on('recovery', (r) => w.recoveries.push(r))
  client.on('error', (e) => w.errors.push(e))
  client.on('open', (o) => w.opens.push(o))
  client.on('presence', (p) => w.presences.push(p))
  client.on('disconnected', (d) => w.disconnects.push(d))
  return w
}

/** A token function that holds every reconnect until `release()`: the gap is then certain. */
export function gatedToken (jwt: string) {
  let gate: Promise<void> = Promise.resolve()
  let release = (): void => {}
  return {
    token: async () => { await gate; return jwt },
    hold () { gate = new Promise((resolve) => { release = resolve }) },
    release: () => release()
  }
}

export async function publish (t: Test, url: string, channel: string, type: string, payload: Record<string, unknown>): Promise<void> {
  const res = await post(`${url}/realtime/publish`, serviceToken(), { channel, type, payload })
  t.equal(res.status, 202, `published ${type} to ${channel}`)
}

export async function notify (t: Test, url: string, userId: string, message: string): Promise<void> {
  const res = await post(`${url}/realtime/test/notification`, serviceToken(), { userId, message })
  t.equal(res.status, 202, `notified ${userId}`)
}
