// Low-stock alerts: one row per product, raised by admin:alert and resolved by a restock.
import { clock } from './format.js'

export function createAlerts ({ list, empty, badge }) {
  const rows = new Map()

  function render () {
    const open = [...rows.values()].filter((r) => r.dataset.resolved !== 'true').length
    badge.textContent = String(open)
    badge.dataset.zero = String(open === 0)
    empty.hidden = rows.size > 0
  }

  /** An `admin:alert` of kind low_stock. */
  function raise (event) {
    const p = event.payload ?? {}
    const id = String(p.productId)
    rows.get(id)?.remove()
    const row = document.createElement('li')
    row.className = 'alert'
    row.dataset.productId = id
    row.dataset.threshold = String(p.threshold)
    const name = document.createElement('span')
    name.className = 'alert-name'
    name.textContent = p.productName ?? p.sku ?? `Product ${p.productId}`
    const stock = document.createElement('span')
    stock.className = 'alert-stock'
    stock.textContent = `${p.stock} left`
    const meta = document.createElement('span')
    meta.className = 'alert-meta'
    meta.textContent = `${p.sku ?? `id ${p.productId}`} · threshold ${p.threshold} · ${clock(event.ts)}`
    row.append(name, stock, meta)
    list.prepend(row)
    rows.set(id, row)
    render()
  }

  /** Any stock change: a product back above its threshold is marked restocked. */
  function stockChanged (event) {
    const p = event.payload ?? {}
    const row = rows.get(String(p.productId))
    if (row === undefined) return
    const resolved = p.stock > Number(row.dataset.threshold)
    row.dataset.resolved = String(resolved)
    row.querySelector('.alert-stock').textContent = resolved ? `restocked · ${p.stock}` : `${p.stock} left`
    render()
  }

  render()
  return { raise, stockChanged }
}
