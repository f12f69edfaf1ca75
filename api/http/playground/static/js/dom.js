// Small DOM helpers. Text from the API only ever reaches the page as text nodes or attribute
// values, never as HTML.

const PROPERTIES = new Set(['value', 'checked', 'selected', 'indeterminate', 'textContent']);

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value == null || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (PROPERTIES.has(name)) el[name] = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let uid = 0;
export function id(prefix = 'f') {
  uid += 1;
  return `${prefix}-${uid}`;
}

// A labelled control: <div class="field"><label for=…>…</label> control [hint]</div>
export function field(label, control, hint) {
  if (!control.id) control.id = id();
  const parts = [h('label', { for: control.id }, label), control];
  if (hint) {
    const hintId = id('hint');
    control.setAttribute('aria-describedby', hintId);
    parts.push(h('p', { class: 'hint', id: hintId }, hint));
  }
  return h('div', { class: 'field' }, parts);
}

export function announce(text) {
  const region = document.getElementById('announcer');
  region.textContent = '';
  // A separate task, so the same text said twice is announced twice.
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

export function errorText(error) {
  if (!error) return '';
  if (error.status) return `${error.message} (HTTP ${error.status}${error.code ? `, ${error.code}` : ''})`;
  return error.message || String(error);
}

export function alertBox(error) {
  return h('p', { class: 'error', role: 'alert' }, errorText(error));
}

export function time(seconds) {
  if (!seconds) return '—';
  const date = new Date(seconds * 1000);
  return date.toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
}

// Today's times without the date.
export function clock(seconds) {
  if (!seconds) return '—';
  const date = new Date(seconds * 1000);
  if (date.toDateString() !== new Date().toDateString()) return time(seconds);
  return date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function duration(from, to) {
  if (!from || !to) return '—';
  const seconds = to - from;
  if (seconds < 1) return '< 1 s';
  if (seconds < 120) return `${seconds} s`;
  return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

export function bytes(n) {
  if (n == null) return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// Function arguments and outputs are strings that usually hold JSON: show them indented.
export function pretty(value) {
  if (value == null) return '';
  if (typeof value !== 'string') return JSON.stringify(value, null, 2);
  try {
    return JSON.stringify(JSON.parse(value), null, 2);
  } catch {
    return value;
  }
}

export function badge(status) {
  return h('span', { class: `badge status-${status}` }, status.replace(/_/g, ' '));
}

// A button that asks again before doing something that cannot be undone.
export function confirmButton(label, action, className = 'danger') {
  const button = h('button', { type: 'button', class: className }, label);
  let armed = false;
  let timer;
  button.addEventListener('click', async () => {
    if (!armed) {
      armed = true;
      button.textContent = `Confirm: ${label.toLowerCase()}`;
      timer = setTimeout(() => {
        armed = false;
        button.textContent = label;
      }, 4000);
      return;
    }
    clearTimeout(timer);
    button.disabled = true;
    try {
      await action();
    } finally {
      button.disabled = false;
      armed = false;
      button.textContent = label;
    }
  });
  return button;
}
