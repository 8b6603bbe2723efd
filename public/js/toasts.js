// Toasts: short-lived notices in the corner; at most a few at a time.
const MAX_TOASTS = 4

export function createToasts (container) {
  return function toast ({ title, body = '', kind = 'info', ttlMs = 5000 }) {
    const el = document.createElement('div')
    el.className = 'toast'
    el.dataset.kind = kind
    el.setAttribute('role', kind === 'error' ? 'alert' : 'status')
    const head = document.createElement('div')
    head.className = 'toast-title'
    head.textContent = title
    el.append(head)
    if (body !== '') {
      const text = document.createElement('div')
      text.className = 'toast-body'
      text.textContent = body
      el.append(text)
    }
    container.append(el)
    while (container.children.length > MAX_TOASTS) container.firstElementChild.remove()
    setTimeout(() => el.remove(), ttlMs)
  }
}
