// Low stock: every product whose stock is at or below the threshold right now, from the
// inventory events (and the inventory channel's history when the page opens), not only
// the `admin:alert` that fires when a product crosses the threshold: a product that sat
// at 0 before the page opened must show too. A product restocked above it stays listed,
// marked restocked, so the operator sees it was dealt with.
import { clock } from './format.js'

export function createAlerts ({ list, empty, badge, threshold = 5 }) {
  let limit = threshold
  /** productId → { row, stock, ts }: the latest stock applied (events may come out of order). */
  const products = new Map()

  function render () {
    const entries = [...products.values()]
    const open = entries.filter((e) => e.row.dataset.resolved !== 'true').length
    badge.textContent = String(open)
    badge.dataset.zero = String(open === 0)
    empty.hidden = entries.length > 0
    // Lowest stock first; restocked ones last.
    entries.sort((a, b) => Number(a.row.dataset.resolved === 'true') - Number(b.row.dataset.resolved === 'true') || a.stock - b.stock)
    list.replaceChildren(...entries.map((e) => e.row))
  }

  function rowFor (p) {
    const row = document.createElement('li')
    row.className = 'alert'
    row.dataset.productId = String(p.productId)
    for (const className of ['alert-name', 'alert-stock', 'alert-meta']) {
      row.append(Object.assign(document.createElement('span'), { className }))
    }
    return row
  }

  /** A stock figure for a product; `alerted`: it came with an admin:alert. */
  function apply (p, ts, alerted) {
    if (p.productId === undefined || typeof p.stock !== 'number') return
    const id = String(p.productId)
    const known = products.get(id)
    if (known !== undefined && known.ts !== undefined && ts !== undefined && ts < known.ts) return // older than what is shown
    if (known === undefined && p.stock > limit && !alerted) return // fine, and never was low here
    const entry = known ?? { row: rowFor(p) }
    entry.stock = p.stock
    entry.ts = ts ?? entry.ts
    products.set(id, entry)
    const resolved = p.stock > limit
    const { row } = entry
    row.dataset.resolved = String(resolved)
    row.dataset.stock = String(p.stock)
    row.dataset.threshold = String(limit)
    const name = p.productName ?? p.name ?? p.sku
    if (name !== undefined || known === undefined) row.querySelector('.alert-name').textContent = name ?? `Product ${id}`
    row.querySelector('.alert-stock').textContent = resolved ? `restocked · ${p.stock}` : p.stock <= 0 ? 'out of stock · 0 left' : `${p.stock} left`
    row.querySelector('.alert-meta').textContent = `${p.sku ?? `id ${id}`} · threshold ${limit} · ${clock(ts)}`
    render()
  }

  /** An `admin:alert`; a low_stock one names the gateway's threshold. */
  function raise (event) {
    const p = event.payload ?? {}
    if (typeof p.threshold === 'number') limit = p.threshold
    apply(p, event.ts, true)
  }

  /** Any stock change (`admin:inventory:updated` live, `inventory:updated` from history). */
  function stockChanged (event) {
    apply(event.payload ?? {}, event.ts, false)
  }

  /** The gateway's LOW_STOCK_THRESHOLD, once known. */
  function setThreshold (n) {
    if (typeof n === 'number') limit = n
  }

  render()
  return { raise, stockChanged, setThreshold }
}
