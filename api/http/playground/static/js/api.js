// The API client of the playground: the public /v1 endpoints, with the bodies, headers and
// streaming the official SDKs use, so every call here is also an example of the API.

const BASE = new URL('../v1/', document.baseURI).pathname;
const KEY_STORAGE = 'assistgraph.playground.apiKey';

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.type = error.type || null;
    this.code = error.code || null;
    this.param = error.param || null;
  }
}

// With ASSISTGRAPH_AUTH=true every request carries the key; it lives in sessionStorage only, so it
// is gone when the tab is closed and never shared with other tabs.
export const credentials = {
  required: false,
  onRejected: null, // called when the server refuses the key (401)
  get key() {
    return sessionStorage.getItem(KEY_STORAGE);
  },
  set(key) {
    sessionStorage.setItem(KEY_STORAGE, key);
  },
  clear() {
    sessionStorage.removeItem(KEY_STORAGE);
  },
};

function headers(extra = {}, beta = true) {
  const out = { ...extra };
  // The SDKs send this on assistants, threads, runs and vector stores, not on /files.
  if (beta) out['OpenAI-Beta'] = 'assistants=v2';
  const key = credentials.key;
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

export function url(path, query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    if (value == null) continue;
    for (const one of Array.isArray(value) ? value : [value]) params.append(name, String(one));
  }
  const search = params.toString();
  return BASE + path.replace(/^\//, '') + (search ? `?${search}` : '');
}

async function send(method, path, { body, query, signal, form } = {}) {
  const beta = !path.startsWith('files');
  const init = { method, signal, headers: headers({}, beta) };
  if (form) init.body = form;
  else if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url(path, query), init);
  if (!response.ok) {
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      /* not JSON: the status says enough */
    }
    const error = new ApiError(response.status, payload);
    if (response.status === 401 && credentials.onRejected) credentials.onRejected(error);
    throw error;
  }
  return response;
}

export const api = {
  async get(path, query, signal) {
    return (await send('GET', path, { query, signal })).json();
  },
  async post(path, body = {}, query) {
    return (await send('POST', path, { body, query })).json();
  },
  async del(path) {
    return (await send('DELETE', path)).json();
  },
  // Every item of a cursor-paginated list (`after` = the last id of the previous page).
  async list(path, query = {}) {
    const items = [];
    let after;
    for (;;) {
      const page = await api.get(path, { limit: 100, ...query, after });
      items.push(...page.data);
      if (!page.has_more || !page.data.length) return items;
      after = page.last_id;
    }
  },
  // POST /v1/files, multipart/form-data: `purpose` and `file`.
  async upload(file, purpose) {
    const form = new FormData();
    form.append('purpose', purpose);
    form.append('file', file, file.name);
    return (await send('POST', 'files', { form })).json();
  },
  // A run endpoint with `stream: true`: yields {event, data} for each server-sent event.
  async *stream(path, body, query, signal) {
    const response = await send('POST', path, { body: { ...body, stream: true }, query, signal });
    yield* events(response.body);
  },
  async blob(path) {
    return (await send('GET', path)).blob();
  },
};

// Server-sent events: blocks separated by a blank line, `event:` and `data:` fields, `:` comments
// (keep-alives) ignored. The stream ends with `event: done` / `data: [DONE]`.
export async function* events(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      // Normalise CRLF, keeping a trailing CR until its LF arrives.
      const cut = buffer.endsWith('\r') ? buffer.length - 1 : buffer.length;
      buffer = buffer.slice(0, cut).replace(/\r\n?/g, '\n') + buffer.slice(cut);
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = parseBlock(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event) yield event;
      }
    }
    const last = parseBlock(buffer.replace(/\r\n?/g, '\n'));
    if (last) yield last;
  } finally {
    reader.cancel().catch(() => {});
  }
}

export function parseBlock(block) {
  let event = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length) return null;
  const text = data.join('\n');
  return { event, data: text.startsWith('[DONE]') ? '[DONE]' : JSON.parse(text) };
}

// Files seen by the page: their objects (for names) and their bytes (as blob: URLs for <img>).
const fileObjects = new Map();
const fileUrls = new Map();

export function fileObject(id) {
  if (!fileObjects.has(id)) {
    fileObjects.set(id, api.get(`files/${id}`).catch(() => null));
  }
  return fileObjects.get(id);
}

export function rememberFile(file) {
  fileObjects.set(file.id, Promise.resolve(file));
}

export function fileUrl(id) {
  if (!fileUrls.has(id)) {
    const loading = api.blob(`files/${id}/content`).then((blob) => URL.createObjectURL(blob));
    loading.catch(() => fileUrls.delete(id));
    fileUrls.set(id, loading);
  }
  return fileUrls.get(id);
}

export async function download(id) {
  const [href, file] = await Promise.all([fileUrl(id), fileObject(id)]);
  const link = document.createElement('a');
  link.href = href;
  link.download = (file && file.filename) || id;
  document.body.append(link);
  link.click();
  link.remove();
}
