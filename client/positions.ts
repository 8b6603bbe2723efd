/** Where the client stands in a channel: the offset of the last event it saw, and its epoch. */
export interface Position {
  offset: number
  /** Unknown until an acknowledgement or an SSE cursor names it; events do not carry it. */
  epoch?: string
}

/**
 * The last position of every channel, so a reconnect can resume each one: as `since`
 * over WebSocket, as a `Last-Event-ID` cursor over SSE. The cursor format mirrors the
 * gateway's `lib/transport/sse-cursor.ts` (`v1;channel,epoch,offset;…`); the client ships with
 * the gateway, so it may know what is opaque to everyone else.
 */
export class Positions {
  private readonly byChannel = new Map<string, Position>()

  get (channel: string): Position | undefined {
    return this.byChannel.get(channel)
  }

  set (channel: string, position: Position): void {
    this.byChannel.set(channel, { offset: position.offset, epoch: position.epoch })
  }

  /** Keeps the offset the client reached and learns the epoch it counts in. */
  setEpoch (channel: string, epoch: string): void {
    const known = this.byChannel.get(channel)
    if (known !== undefined) known.epoch = epoch
  }

  /** Events of a channel arrive in offset order; never move backwards on a late one. */
  sawEvent (channel: string, offset: number): void {
    const known = this.byChannel.get(channel)
    if (known === undefined) this.byChannel.set(channel, { offset })
    else if (offset > known.offset) known.offset = offset
  }

  forget (channel: string): void {
    this.byChannel.delete(channel)
  }

  /** The `since` of a subscribe frame for the channels with a known position, or undefined. */
  since (channels: readonly string[]): Record<string, Position> | undefined {
    let since: Record<string, Position> | undefined
    for (const channel of channels) {
      const p = this.byChannel.get(channel)
      if (p !== undefined) (since ??= {})[channel] = { ...p }
    }
    return since
  }

  /** Learns every channel's position from an SSE cursor; ignores cursors it cannot read. */
  readCursor (cursor: string): void {
    if (!cursor.startsWith('v1;')) return
    for (const part of cursor.slice(3).split(';')) {
      const [channel, epoch, offsetText] = part.split(',')
      const offset = Number(offsetText)
      if (channel !== undefined && channel !== '' && epoch !== undefined && Number.isSafeInteger(offset)) {
        this.byChannel.set(channel, { offset, epoch })
      }
    }
  }

  /** A cursor for the channels whose epoch is known (a cursor needs it), or undefined. */
  cursor (channels: Iterable<string>): string | undefined {
    const parts: string[] = []
    for (const channel of channels) {
      const p = this.byChannel.get(channel)
      if (p?.epoch !== undefined) parts.push(`${channel},${p.epoch},${p.offset}`)
    }
    return parts.length === 0 ? undefined : 'v1;' + parts.join(';')
  }

  /** The channels a cursor names whose position is no longer the one it gives. */
  movedFrom (cursor: string): string[] {
    const then = new Positions()
    then.readCursor(cursor)
    const moved: string[] = []
    for (const [channel, p] of then.byChannel) {
      const now = this.byChannel.get(channel)
      if (now?.offset !== p.offset || now.epoch !== p.epoch) moved.push(channel)
    }
    return moved
  }

  snapshot (): Record<string, Position> {
    const out: Record<string, Position> = {}
    for (const [channel, p] of this.byChannel) out[channel] = { ...p }
    return out
  }
}
