/**
 * Redis Cluster's key slots, computed here so the broker can place a channel's keys and
 * group a batch by slot without asking the cluster: `slotOf` is Redis's own rule (CRC16
 * XMODEM of the key, or of its hash tag, the text between the first `{` and the next `}`,
 * modulo 16384), and `slotTag` names, for each slot, a short tag that hashes to it, so a key
 * shared by every channel of a slot (its epoch base) can sit in that slot.
 */
export const SLOTS = 16384

const CRC16_TABLE = (() => {
  const table = new Uint16Array(256)
  for (let i = 0; i < 256; i++) {
    let crc = i << 8
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
    table[i] = crc
  }
  return table
})()

function crc16 (bytes: ArrayLike<number>, start: number, end: number): number {
  let crc = 0
  for (let i = start; i < end; i++) crc = ((crc << 8) & 0xffff) ^ CRC16_TABLE[((crc >> 8) ^ bytes[i]) & 0xff]
  return crc
}

/** The UTF-8 bytes of `text`: its char codes as they are when it is ASCII (channel names are). */
function bytesOf (text: string): ArrayLike<number> {
  const codes = new Array<number>(text.length)
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    if (code > 0x7f) return Buffer.from(text)
    codes[i] = code
  }
  return codes
}

/** The slot of a key (or shard channel) in a Redis Cluster. */
export function slotOf (key: string): number {
  const bytes = bytesOf(key)
  let start = 0
  let end = bytes.length
  let open = -1
  for (let i = 0; i < end; i++) if (bytes[i] === 0x7b) { open = i; break } // {
  if (open >= 0) {
    let close = -1
    for (let i = open + 1; i < end; i++) if (bytes[i] === 0x7d) { close = i; break } // }
    // `{}` (an empty tag) does not count: the whole key is hashed.
    if (close > open + 1) {
      start = open + 1
      end = close
    }
  }
  return crc16(bytes, start, end) % SLOTS
}

let tags: string[] | undefined

/** A short text whose slot is `slot` (the same for every process: base-36 counting, first hit). */
export function slotTag (slot: number): string {
  if (tags === undefined) {
    // Immutable once built (about 170k CRCs of 1–4 characters, a few ms), so sharing it is safe.
    const table = new Array<string>(SLOTS)
    let found = 0
    for (let n = 0; found < SLOTS; n++) {
      const tag = n.toString(36)
      const s = slotOf(tag)
      if (table[s] === undefined) {
        table[s] = tag
        found++
      }
    }
    tags = table
  }
  return tags[slot]
}
