// Run inspector: one run (status, timings, usage, settings, errors) and its steps
// (GET /v1/threads/{id}/runs/{id}/steps with file_search result content included): tool calls
// with arguments and outputs, file_search results, code_interpreter input and outputs, and the
// message each message_creation step wrote. Refreshes itself while the run is active.

import { api } from './api.js';
import { badge, duration, h, replace, time } from './dom.js';
import { contentPart, toolCall, usage } from './render.js';

const INCLUDE = { 'include[]': 'step_details.tool_calls[*].file_search.results[*].content' };
const TERMINAL = new Set(['completed', 'incomplete', 'failed', 'cancelled', 'expired']);

export async function render(main, { threadId, runId }) {
  const sidebar = h('aside', { class: 'sidebar', 'aria-labelledby': 'runs-title' });
  const content = h('section', { class: 'content inspector', 'aria-labelledby': 'view-title' });
  replace(main, h('div', { class: 'split' }, sidebar, content));
  const open = new Set(); // steps the person opened, kept open across refreshes
  let timer = null;
  let stopped = false;

  async function refresh(first) {
    const [run, steps, runs] = await Promise.all([
      api.get(`threads/${threadId}/runs/${runId}`),
      api.list(`threads/${threadId}/runs/${runId}/steps`, { order: 'asc', ...INCLUDE }),
      api.get(`threads/${threadId}/runs`, { limit: 100 }),
    ]);
    if (stopped) return;
    renderRuns(sidebar, runs.data, run);
    renderRun(content, run, steps, open, first);
    if (!TERMINAL.has(run.status) && run.status !== 'requires_action') {
      timer = setTimeout(() => refresh(false).catch(() => {}), 1000);
    }
  }

  await refresh(true);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function renderRuns(sidebar, runs, current) {
  replace(sidebar,
    h('div', { class: 'sidebar-head' },
      h('h2', { id: 'runs-title' }, 'Runs of the thread'),
      h('a', { class: 'button', href: `#/chat/${current.assistant_id}/${current.thread_id}` }, 'Back to chat')),
    h('ul', { class: 'list', id: 'run-list' }, runs.map((run) =>
      h('li', {}, h('a', { href: `#/runs/${run.thread_id}/${run.id}`, 'aria-current': run.id === current.id ? 'page' : null },
        h('span', { class: 'item-title' }, h('code', {}, run.id)),
        h('span', { class: 'item-meta' }, badge(run.status), ' ', time(run.created_at)))))));
}

function ended(run) {
  return run.completed_at || run.failed_at || run.cancelled_at || (run.status === 'expired' ? run.expires_at : null);
}

function renderRun(content, run, steps, open, first) {
  const end = ended(run);
  const rows = [
    ['Status', badge(run.status)],
    ['Assistant', h('a', { href: `#/assistants/${run.assistant_id}` }, h('code', {}, run.assistant_id))],
    ['Thread', h('a', { href: `#/chat/${run.assistant_id}/${run.thread_id}` }, h('code', {}, run.thread_id))],
    ['Model', h('code', {}, run.model)],
    ['Created', time(run.created_at)],
    ['Started', time(run.started_at)],
    [run.failed_at ? 'Failed' : run.cancelled_at ? 'Cancelled' : run.status === 'expired' ? 'Expired' : 'Completed', time(end)],
    ['Waited in queue', duration(run.created_at, run.started_at)],
    ['Ran for', duration(run.started_at, end)],
    ['Usage', usage(run.usage)],
    ['Tools', run.tools.length ? run.tools.map((t) => t.builtin ? t.builtin.type === 'action' ? `action ${t.builtin.id}` : t.builtin.type : t.type === 'function' ? `function ${t.function.name}` : t.type).join(', ') : 'none'],
    ['Temperature / top P', `${run.temperature ?? '—'} / ${run.top_p ?? '—'}`],
    ['Token budgets', `prompt ${run.max_prompt_tokens ?? 'unlimited'}, completion ${run.max_completion_tokens ?? 'unlimited'}`],
    ['Tool choice', typeof run.tool_choice === 'string' ? run.tool_choice : JSON.stringify(run.tool_choice)],
    ['Truncation', run.truncation_strategy ? run.truncation_strategy.type + (run.truncation_strategy.last_messages ? ` (last ${run.truncation_strategy.last_messages})` : '') : '—'],
  ];
  if (run.expires_at && !TERMINAL.has(run.status)) rows.push(['Expires', time(run.expires_at)]);
  if (run.last_error) rows.push(['Last error', h('span', { class: 'error-text' }, `${run.last_error.code}: ${run.last_error.message}`)]);
  if (run.incomplete_details) rows.push(['Incomplete because', run.incomplete_details.reason]);
  const waiting = run.required_action
    ? h('div', { class: 'notice' }, 'Waiting for the outputs of: ',
      run.required_action.submit_tool_outputs.tool_calls.map((c) => h('code', {}, `${c.function.name}(${c.function.arguments}) `)),
      h('a', { href: `#/chat/${run.assistant_id}/${run.thread_id}` }, 'answer in the chat'))
    : null;

  replace(content,
    h('div', { class: 'content-head' },
      h('h1', { id: 'view-title', tabindex: '-1' }, 'Run ', h('code', {}, run.id))),
    waiting,
    h('dl', { class: 'facts wide' }, rows.map(([label, value]) => [h('dt', {}, label), h('dd', {}, value)])),
    run.instructions ? h('details', { class: 'raw' }, h('summary', {}, 'Instructions'), h('pre', { class: 'code' }, run.instructions)) : null,
    h('h2', { id: 'steps-title' }, `Steps (${steps.length})`),
    steps.length
      ? h('ol', { class: 'steps', id: 'steps', 'aria-labelledby': 'steps-title' }, steps.map((step, i) => stepItem(step, i, open)))
      : h('p', { class: 'muted' }, 'No steps yet.'),
    h('details', { class: 'raw' }, h('summary', {}, 'Run object (JSON)'), h('pre', { class: 'code' }, JSON.stringify(run, null, 2))));
  if (first) content.querySelector('h1').focus();
}

function stepItem(step, i, open) {
  const calls = step.type === 'tool_calls' ? step.step_details.tool_calls : [];
  const what = step.type === 'tool_calls'
    ? `tool calls: ${calls.map((c) => c.type === 'function' ? c.function.name : c.type).join(', ') || '…'}`
    : 'message';
  const body = h('div', { class: 'step-body' });
  const details = h('details', { class: 'step', 'data-step-id': step.id, open: open.has(step.id) },
    h('summary', {},
      h('span', { class: 'step-n' }, `${i + 1}.`), ' ', h('span', { class: 'step-what' }, what), ' ', badge(step.status),
      h('span', { class: 'muted' }, ` ${duration(step.created_at, step.completed_at || step.failed_at || step.cancelled_at || step.expired_at)}`),
      step.usage ? h('span', { class: 'muted' }, ` · ${step.usage.total_tokens} tokens`) : null),
    body);
  let filled = false;
  const fill = () => {
    if (filled) return;
    filled = true;
    body.append(h('dl', { class: 'facts small' },
      h('dt', {}, 'Step'), h('dd', {}, h('code', {}, step.id)),
      h('dt', {}, 'Created'), h('dd', {}, time(step.created_at)),
      h('dt', {}, 'Ended'), h('dd', {}, time(step.completed_at || step.failed_at || step.cancelled_at || step.expired_at)),
      h('dt', {}, 'Usage'), h('dd', {}, usage(step.usage)),
      step.last_error ? [h('dt', {}, 'Error'), h('dd', { class: 'error-text' }, `${step.last_error.code}: ${step.last_error.message}`)] : null));
    if (step.type === 'tool_calls') {
      body.append(...(calls.length ? calls.map((call) => toolCall(call)) : [h('p', { class: 'muted' }, 'No tool calls yet.')]));
    } else {
      const messageId = step.step_details.message_creation.message_id;
      const holder = h('div', { class: 'message assistant' }, h('p', { class: 'muted' }, `Message ${messageId}`));
      body.append(holder);
      api.get(`threads/${step.thread_id}/messages/${messageId}`).then(
        (message) => holder.append(...message.content.map((part, k) => contentPart(part, { idPrefix: `${step.id}-${k}` }))),
        (error) => holder.append(h('p', { class: 'error' }, error.message)));
    }
    body.append(h('details', { class: 'raw' }, h('summary', {}, 'Step object (JSON)'), h('pre', { class: 'code' }, JSON.stringify(step, null, 2))));
  };
  details.addEventListener('toggle', () => {
    if (details.open) {
      open.add(step.id);
      fill();
    } else open.delete(step.id);
  });
  if (details.open) fill();
  return h('li', {}, details);
}
