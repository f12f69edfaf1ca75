// Boot and routing. Views are ES modules loaded when first shown; each renders into <main> and
// returns a function that stops what it started (streams, polling) when the view is left.

import { api, credentials } from './api.js';
import { alertBox, h, replace } from './dom.js';

const main = document.getElementById('main');
const forgetKey = document.getElementById('forget-key');
const config = { auth: false, models: false };
let leave = null;
let generation = 0;

const ROUTES = [
  [/^#\/assistants\/?$/, 'assistants', () => ({})],
  [/^#\/assistants\/(new|asst_[\w-]+)$/, 'assistants', (m) => ({ assistantId: m[1] })],
  [/^#\/chat\/(asst_[\w-]+)(?:\/(thread_[\w-]+))?$/, 'chat', (m) => ({ assistantId: m[1], threadId: m[2] })],
  [/^#\/runs\/(thread_[\w-]+)\/(run_[\w-]+)$/, 'inspector', (m) => ({ threadId: m[1], runId: m[2] })],
  [/^#\/files(?:\/(vs_[\w-]+))?$/, 'files', (m) => ({ vectorStoreId: m[1] })],
];

const VIEWS = {
  assistants: () => import('./assistants.js'),
  chat: () => import('./chat.js'),
  inspector: () => import('./inspector.js'),
  files: () => import('./files.js'),
};
const SECTION = { assistants: 'assistants', chat: 'assistants', inspector: 'assistants', files: 'files' };

function match(hash) {
  for (const [pattern, view, params] of ROUTES) {
    const m = pattern.exec(hash);
    if (m) return { view, params: params(m) };
  }
  return null;
}

async function route() {
  let found = match(location.hash);
  if (!found) {
    history.replaceState(null, '', '#/assistants'); // no hashchange: routed right here
    found = match(location.hash);
  }
  if (credentials.required && !credentials.key) {
    askForKey();
    return;
  }
  const mine = ++generation;
  if (leave) leave();
  leave = null;
  for (const link of document.querySelectorAll('nav a')) {
    if (link.dataset.section === SECTION[found.view]) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  try {
    const module = await VIEWS[found.view]();
    if (mine !== generation) return;
    const done = await module.render(main, found.params, { config, navigate });
    if (mine !== generation) {
      if (typeof done === 'function') done();
      return;
    }
    leave = typeof done === 'function' ? done : null;
  } catch (error) {
    if (mine !== generation) return;
    if (error.status === 401) return; // the key form is up
    replace(main, alertBox(error));
  }
  if (mine === generation) document.dispatchEvent(new CustomEvent('playground:rendered'));
}

export function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function askForKey(problem) {
  if (leave) leave();
  leave = null;
  generation += 1;
  const input = h('input', { id: 'api-key', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
  const error = problem ? alertBox(problem) : null;
  const form = h(
    'form',
    { class: 'card narrow', 'aria-labelledby': 'key-title' },
    h('h1', { id: 'key-title' }, 'API key'),
    h('p', {}, 'This server requires an API key. The playground keeps it in this tab only (session storage) and sends it as ',
      h('code', {}, 'Authorization: Bearer …'), ' with every request.'),
    error,
    h('div', { class: 'field' }, h('label', { for: 'api-key' }, 'API key'), input),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Use this key')),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    credentials.set(input.value.trim());
    try {
      await api.get('assistants', { limit: 1 });
    } catch (failure) {
      if (failure.status !== 401) {
        form.querySelector('.error')?.remove();
        form.insertBefore(alertBox(failure), form.querySelector('.field'));
      }
      return;
    }
    forgetKey.hidden = false;
    route();
  });
  replace(main, form);
  forgetKey.hidden = true;
  input.focus();
}

async function boot() {
  try {
    const response = await fetch('config.json'); // preloaded by index.html; the server says no-store
    Object.assign(config, await response.json());
  } catch {
    /* an older server: no auth, no model list */
  }
  credentials.required = config.auth;
  credentials.onRejected = (error) => {
    credentials.clear();
    askForKey(new Error(`The server refused the API key: ${error.message}`));
  };
  forgetKey.hidden = !(config.auth && credentials.key);
  forgetKey.addEventListener('click', () => {
    credentials.clear();
    askForKey();
  });
  window.addEventListener('hashchange', route);
  await route();
  performance.mark('playground:ready');
}

boot();
