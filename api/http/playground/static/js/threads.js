// The Assistants API has no "list threads" call, so the playground remembers the threads it
// created, per assistant, in this browser's localStorage:
//   assistgraph.playground.threads = {"asst_…": [{"id": "thread_…", "title": "…", "created_at": 1700000000}, …]}
// Only ids and titles are kept; messages and runs are always read from the API.

const STORAGE = 'assistgraph.playground.threads';

function load() {
  try {
    const value = JSON.parse(localStorage.getItem(STORAGE) || '{}');
    return value && typeof value === 'object' ? value : {};
  } catch {
    return {};
  }
}

function save(all) {
  localStorage.setItem(STORAGE, JSON.stringify(all));
}

export function threadsOf(assistantId) {
  return (load()[assistantId] || []).slice().sort((a, b) => b.created_at - a.created_at);
}

export function remember(assistantId, thread, title) {
  const all = load();
  const list = (all[assistantId] || []).filter((t) => t.id !== thread.id);
  list.push({ id: thread.id, title: title || '', created_at: thread.created_at });
  all[assistantId] = list;
  save(all);
}

export function retitle(assistantId, threadId, title) {
  const all = load();
  const entry = (all[assistantId] || []).find((t) => t.id === threadId);
  if (entry && !entry.title) {
    entry.title = title;
    save(all);
  }
}

export function forget(threadId) {
  const all = load();
  for (const key of Object.keys(all)) all[key] = all[key].filter((t) => t.id !== threadId);
  save(all);
}

export function forgetAssistant(assistantId) {
  const all = load();
  delete all[assistantId];
  save(all);
}
