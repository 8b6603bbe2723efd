// Formatting and classification of events, shared by the dashboard's panels.

export const clock = (iso) => new Date(iso ?? Date.now()).toLocaleTimeString([], { hour12: false })

export const count = (n) => Number(n).toLocaleString()

const moneyFormats = new Map()
export function money (amount, currency = 'USD') {
  let format = moneyFormats.get(currency)
  if (format === undefined) {
    try {
      format = new Intl.NumberFormat(undefined, { style: 'currency', currency, maximumFractionDigits: 2 })
    } catch {
      format = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 })
    }
    moneyFormats.set(currency, format)
  }
  return format.format(amount)
}

/** The log's filter categories. */
export function categoryOf (type) {
  if (type === 'admin:alert') return 'alert'
  if (type.includes('order')) return 'order'
  if (type.includes('inventory')) return 'inventory'
  if (type.startsWith('product')) return 'product'
  if (type === 'notification') return 'notification'
  return 'other'
}

const productLabel = (p) => p.productName ?? p.sku ?? `product ${p.productId}`

/** One line describing an event, for the log. */
export function summarize (event) {
  const p = event.payload ?? {}
  switch (categoryOf(event.type)) {
    case 'order': {
      const total = typeof p.total === 'number' ? ` · ${money(p.total, p.currency)}` : ''
      const status = p.status ?? event.type.split(':').pop()
      const from = p.previousStatus !== undefined ? `${p.previousStatus} → ` : ''
      const reason = p.reason !== undefined ? ` (${p.reason})` : ''
      return `Order ${p.orderId}: ${from}${status}${reason}${total} · user ${p.userId ?? '?'}`
    }
    case 'inventory': {
      const from = p.previousStock !== undefined ? `${p.previousStock} → ` : ''
      return `${productLabel(p)}: stock ${from}${p.stock}`
    }
    case 'alert':
      return p.kind === 'low_stock'
        ? `Low stock: ${productLabel(p)} at ${p.stock} (threshold ${p.threshold})`
        : JSON.stringify(p).slice(0, 200)
    case 'product': {
      const price = typeof p.price === 'number' ? ` · ${money(p.price, p.currency)}` : ''
      return `${p.name ?? `Product ${p.productId}`}${price}`
    }
    case 'notification':
      return [p.title, p.message].filter(Boolean).join(': ') || JSON.stringify(p).slice(0, 200)
    default:
      return JSON.stringify(p).slice(0, 200)
  }
}
