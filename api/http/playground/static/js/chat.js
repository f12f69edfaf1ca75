// Chat: the threads of an assistant and one conversation. A message is sent with
// POST /v1/threads/{id}/messages, then the run is created with `stream: true` and its server-sent
// events drive the page: text deltas are appended as they arrive, tool-call steps show their
// arguments and outputs, `requires_action` asks the person for the function outputs (sent with
// submit_tool_outputs, streamed too), and the run can be cancelled.

import { api, rememberFile } from './api.js';
import { alertBox, announce, badge, clock, confirmButton, field, h, pretty, replace, time } from './dom.js';
import { contentPart, textPart, toolCall } from './render.js';
import { forget, remember, retitle, threadsOf } from './threads.js';

export const INCLUDE = { 'include[]': 'step_details.tool_calls[*].file_search.results[*].content' };
const ACTIVE = new Set(['queued', 'in_progress', 'cancelling']);
const TERMINAL = new Set(['completed', 'incomplete', 'failed', 'cancelled', 'expired']);

export async function render(main, { assistantId, threadId }, { navigate }) {
  const assistant = await api.get(`assistants/${assistantId}`);
  let thread = null;
  if (threadId) {
    try {
      thread = await api.get(`threads/${threadId}`);
    } catch (error) {
      if (error.status !== 404) throw error;
      forget(threadId); // deleted elsewhere, or another key's thread
      navigate(`#/chat/${assistantId}`);
      return null;
    }
  }
  const view = new ChatView(main, assistant, thread, navigate);
  await view.start();
  return () => view.stop();
}

class ChatView {
  constructor(main, assistant, thread, navigate) {
    this.main = main;
    this.assistant = assistant;
    this.thread = thread;
    this.navigate = navigate;
    this.run = null;
    this.controller = null; // aborts the open stream when the view is left
    this.pollTimer = null;
    this.stopped = false;
    this.attachments = [];
    this.sending = false;
  }

  async start() {
    const a = this.assistant;
    this.log = h('div', { class: 'messages', id: 'messages', role: 'log', 'aria-label': 'Conversation', tabindex: '0' });
    this.follow = true;
    this.log.addEventListener('scroll', () => {
      this.follow = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 60;
    });
    this.runBar = h('div', { class: 'run-bar', id: 'run-bar', hidden: true });
    this.outputsForm = null; // the requires_action form, at the end of the conversation
    this.liveSteps = new Map(); // tool-call steps shown in the conversation, updated by later streams too
    this.input = h('textarea', { id: 'composer', rows: 2, placeholder: 'Ask something…', 'aria-describedby': 'composer-hint' });
    this.fileInput = h('input', { type: 'file', id: 'attach', multiple: true });
    this.attachList = h('ul', { class: 'attachments', 'aria-label': 'Files to send' });
    this.sendButton = h('button', { type: 'submit', class: 'primary', id: 'send' }, 'Send');
    this.formStatus = h('div', { class: 'form-status', role: 'status' });
    const composer = h('form', { class: 'composer', 'aria-label': 'New message' },
      h('label', { for: 'composer' }, 'Message'),
      this.input,
      this.attachList,
      this.formStatus,
      h('div', { class: 'composer-actions' },
        h('p', { class: 'hint', id: 'composer-hint' }, 'Enter sends, Shift+Enter adds a line. Attached images go as image_file parts, other files as file_search attachments.'),
        h('label', { class: 'button', for: 'attach' }, 'Attach files'), this.fileInput,
        this.sendButton));
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.ctrlKey && !event.altKey && !event.metaKey && !event.isComposing) {
        event.preventDefault();
        composer.requestSubmit();
      }
    });
    this.fileInput.addEventListener('change', () => {
      this.attachments.push(...this.fileInput.files);
      this.fileInput.value = '';
      this.showAttachments();
    });
    composer.addEventListener('submit', (event) => {
      event.preventDefault();
      this.send();
    });

    this.sidebar = h('aside', { class: 'sidebar', 'aria-labelledby': 'threads-title' });
    this.renderSidebar();
    const head = h('div', { class: 'content-head row' },
      h('div', {},
        h('h1', { id: 'view-title', tabindex: '-1' }, a.name || 'Untitled assistant'),
        h('p', { class: 'muted' }, h('code', {}, a.model), ' · ',
          this.thread ? h('span', {}, 'thread ', h('code', { id: 'thread-id' }, this.thread.id)) : 'new thread')),
      h('div', { class: 'actions' },
        h('a', { class: 'button', href: `#/assistants/${a.id}` }, 'Edit assistant'),
        this.thread ? confirmButton('Delete thread', () => this.deleteThread()) : null));
    replace(this.main, h('div', { class: 'split' }, this.sidebar,
      h('section', { class: 'content chat', 'aria-labelledby': 'view-title' }, head, this.log, this.runBar, composer)));

    if (this.thread) await this.loadThread();
    else this.log.append(h('p', { class: 'empty muted' }, 'Send a message to start a new thread.'));
    this.input.focus();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
    clearTimeout(this.pollTimer);
  }

  renderSidebar() {
    const threads = threadsOf(this.assistant.id);
    const current = this.thread && this.thread.id;
    replace(this.sidebar,
      h('div', { class: 'sidebar-head' },
        h('h2', { id: 'threads-title' }, 'Threads'),
        h('a', { class: 'button primary', href: `#/chat/${this.assistant.id}`, id: 'new-thread' }, 'New thread')),
      threads.length
        ? h('ul', { class: 'list', id: 'thread-list' }, threads.map((t) =>
          h('li', {}, h('a', { href: `#/chat/${this.assistant.id}/${t.id}`, 'aria-current': t.id === current ? 'page' : null },
            h('span', { class: 'item-title' }, t.title || 'Untitled thread'),
            h('span', { class: 'item-meta' }, time(t.created_at))))))
        : h('p', { class: 'muted pad' }, 'No threads yet.'),
      h('p', { class: 'hint pad' }, 'The API cannot list threads: the ones created here are remembered in this browser (localStorage), per assistant.'));
  }

  async loadThread() {
    const [messages, runs] = await Promise.all([
      api.list(`threads/${this.thread.id}/messages`, { order: 'asc' }),
      api.get(`threads/${this.thread.id}/runs`, { limit: 1 }),
    ]);
    this.log.replaceChildren(...messages.map((m) => this.messageElement(m)));
    if (!messages.length) this.log.append(h('p', { class: 'empty muted' }, 'No messages yet.'));
    this.scrollDown(true);
    const latest = runs.data[0];
    if (latest) {
      this.setRun(latest);
      if (ACTIVE.has(latest.status)) this.poll();
    }
  }

  // --- messages -------------------------------------------------------------------------------

  messageElement(message) {
    const who = message.role === 'user' ? 'You' : 'Assistant';
    const parts = h('div', { class: 'parts' }, message.content.map((part, i) => contentPart(part, { idPrefix: `${message.id}-${i}` })));
    const attached = (message.attachments || []).map((att) =>
      h('li', {}, h('code', {}, att.file_id), ` for ${att.tools.map((t) => t.type).join(', ')}`));
    return h('article', { class: `message ${message.role}`, 'data-message-id': message.id, 'aria-label': `${who} message` },
      h('header', {},
        h('span', { class: 'who' }, who),
        h('span', { class: 'muted' }, clock(message.created_at)),
        message.run_id ? h('a', { class: 'inspect', href: `#/runs/${message.thread_id}/${message.run_id}` }, 'Inspect run') : null,
        message.status === 'incomplete' ? badge(`incomplete: ${message.incomplete_details?.reason || ''}`) : null),
      parts,
      attached.length ? h('ul', { class: 'attached muted', 'aria-label': 'Attachments' }, attached) : null);
  }

  // The conversation follows new content unless the person scrolled up to read.
  scrollDown(force) {
    if (force) this.follow = true;
    if (this.follow) this.log.scrollTop = this.log.scrollHeight;
  }

  appendToLog(el) {
    this.log.querySelector('.empty')?.remove();
    this.log.append(el);
    this.scrollDown();
  }

  showAttachments() {
    replace(this.attachList, this.attachments.map((file, i) =>
      h('li', {}, file.name, ' ', h('button', { type: 'button', class: 'link', 'aria-label': `Remove ${file.name}`, onclick: () => {
        this.attachments.splice(i, 1);
        this.showAttachments();
        this.input.focus();
      } }, 'Remove'))));
  }

  async send() {
    const text = this.input.value.trim();
    if ((!text && !this.attachments.length) || this.sending) return;
    if (this.run && !TERMINAL.has(this.run.status)) {
      this.formStatus.replaceChildren(h('p', { class: 'error' }, 'Wait for the current run to finish, or cancel it.'));
      return;
    }
    this.formStatus.replaceChildren();
    this.sending = true;
    this.sendButton.disabled = true;
    try {
      if (!this.thread) {
        this.thread = await api.post('threads', {});
        remember(this.assistant.id, this.thread, text.slice(0, 60));
        // The address names the thread now, without leaving the view.
        history.replaceState(null, '', `#/chat/${this.assistant.id}/${this.thread.id}`);
        this.renderSidebar();
        const place = this.main.querySelector('.content-head .muted');
        place.replaceChildren(h('code', {}, this.assistant.model), ' · thread ', h('code', { id: 'thread-id' }, this.thread.id));
      } else if (text) {
        retitle(this.assistant.id, this.thread.id, text.slice(0, 60));
      }
      const content = text ? [{ type: 'text', text }] : [];
      const attachments = [];
      const tools = this.assistant.tools.map((t) => t.type);
      const docTool = tools.includes('file_search') || !tools.includes('code_interpreter') ? 'file_search' : 'code_interpreter';
      for (const file of this.attachments) {
        if (file.type.startsWith('image/')) {
          const uploaded = await api.upload(file, 'vision');
          rememberFile(uploaded);
          content.push({ type: 'image_file', image_file: { file_id: uploaded.id } });
        } else {
          const uploaded = await api.upload(file, 'assistants');
          rememberFile(uploaded);
          attachments.push({ file_id: uploaded.id, tools: [{ type: docTool }] });
        }
      }
      if (!content.length) content.push({ type: 'text', text: '(see the attached files)' });
      const message = await api.post(`threads/${this.thread.id}/messages`, {
        role: 'user', content, ...(attachments.length ? { attachments } : {}),
      });
      this.input.value = '';
      this.attachments = [];
      this.showAttachments();
      this.appendToLog(this.messageElement(message));
      this.scrollDown(true);
      await this.stream(`threads/${this.thread.id}/runs`, { assistant_id: this.assistant.id });
    } catch (error) {
      this.formStatus.replaceChildren(alertBox(error));
    } finally {
      this.sending = false;
      this.sendButton.disabled = false;
    }
  }

  // --- streaming ------------------------------------------------------------------------------

  async stream(path, body) {
    this.controller = new AbortController();
    const live = { message: null, steps: this.liveSteps };
    announce('The assistant is answering');
    try {
      for await (const { event, data } of api.stream(path, body, INCLUDE, this.controller.signal)) {
        if (event === 'done') break;
        this.onEvent(event, data, live);
      }
    } catch (error) {
      if (error.name === 'AbortError') return;
      this.appendToLog(alertBox(error));
    } finally {
      this.controller = null;
    }
    if (this.stopped) return;
    if (this.run && ACTIVE.has(this.run.status)) this.poll(); // the stream ended early: follow by polling
  }

  onEvent(event, data, live) {
    if (event.startsWith('thread.run.step.')) return this.onStep(event, data, live);
    if (event.startsWith('thread.run.')) return this.setRun(data, true);
    if (event === 'thread.message.created') {
      live.message = { data, parts: [], el: this.messageElement(data) };
      live.message.el.setAttribute('aria-busy', 'true');
      this.appendToLog(live.message.el);
      return;
    }
    if (event === 'thread.message.delta' && live.message) return this.onMessageDelta(data, live.message);
    if (event === 'thread.message.completed' || event === 'thread.message.incomplete') {
      const el = this.messageElement(data);
      if (live.message) live.message.el.replaceWith(el);
      else this.appendToLog(el);
      live.message = null;
      this.scrollDown();
      return;
    }
    if (event === 'error') {
      const error = data.error || data;
      this.appendToLog(h('p', { class: 'error', role: 'alert' }, `Stream error: ${error.message}`));
    }
  }

  onMessageDelta(data, message) {
    const container = message.el.querySelector('.parts');
    for (const delta of data.delta.content || []) {
      let part = message.parts[delta.index];
      if (!part) {
        part = { type: delta.type, value: '', annotations: [], el: h('div', { class: 'text' }), node: document.createTextNode('') };
        part.el.append(part.node);
        message.parts[delta.index] = part;
        container.append(part.el);
      }
      if (delta.type === 'text') {
        if (delta.text.value) {
          part.value += delta.text.value;
          part.node.appendData(delta.text.value);
        }
        if (delta.text.annotations && delta.text.annotations.length) {
          part.annotations.push(...delta.text.annotations);
          const el = textPart({ value: part.value, annotations: part.annotations }, { idPrefix: `${data.id}-${delta.index}` });
          part.node = document.createTextNode('');
          el.append(part.node); // later deltas keep appending after the rendered text
          part.el.replaceWith(el);
          part.el = el;
        }
      } else if (delta.type === 'image_file') {
        const el = contentPart(delta, {});
        part.el.replaceWith(el);
        part.el = el;
      }
    }
    this.scrollDown();
  }

  onStep(event, data, live) {
    if (event === 'thread.run.step.created') {
      if (data.type !== 'tool_calls') return;
      const el = h('details', { class: 'activity', 'data-step-id': data.id },
        h('summary', {}, h('span', { class: 'activity-head' }, 'Tool calls'), ' ', badge(data.status), ' ', h('span', { class: 'activity-gist' })),
        h('div', { class: 'calls' }));
      live.steps.set(data.id, { calls: [...(data.step_details.tool_calls || [])], el });
      this.appendToLog(el);
      return;
    }
    const step = live.steps.get(data.id);
    if (!step) return; // a step this view did not see created (the page was opened mid-run)
    if (event === 'thread.run.step.delta') {
      for (const delta of data.delta.step_details?.tool_calls || []) {
        const existing = step.calls[delta.index];
        step.calls[delta.index] = existing ? merge(existing, delta) : structuredClone(delta);
      }
    } else {
      step.calls = data.step_details.tool_calls || step.calls;
      step.el.querySelector('.badge').replaceWith(badge(data.status));
    }
    step.el.querySelector('.calls').replaceChildren(...step.calls.map((call) => toolCall(call)));
    step.el.querySelector('.activity-gist').textContent = step.calls.map(gist).join(' · ');
    this.scrollDown();
  }

  // --- the run ------------------------------------------------------------------------------------

  setRun(run, streamed = false) {
    const previous = this.run;
    this.run = run;
    const active = ACTIVE.has(run.status) || run.status === 'requires_action';
    const cancel = h('button', { type: 'button', id: 'cancel-run', class: 'danger', disabled: !active || run.status === 'cancelling', onclick: () => this.cancel() }, 'Cancel run');
    replace(this.runBar,
      h('span', {}, 'Run ', h('code', {}, run.id), ' '), badge(run.status),
      run.usage ? h('span', { class: 'muted' }, ` ${run.usage.total_tokens} tokens`) : null,
      h('a', { href: `#/runs/${run.thread_id}/${run.id}`, id: 'inspect-run' }, 'Inspect run'),
      active ? cancel : null);
    this.runBar.hidden = false;
    if (run.last_error) this.appendToLog(h('p', { class: 'error', role: 'alert' }, `Run failed: ${run.last_error.message} (${run.last_error.code})`));
    if (run.status === 'incomplete' && streamed) {
      this.appendToLog(h('p', { class: 'notice' }, `Run incomplete: ${run.incomplete_details?.reason || 'unknown reason'}`));
    }
    if (run.status === 'requires_action') {
      if (!this.outputsForm || this.outputsForm.dataset.runId !== run.id) this.askForOutputs(run);
    } else if (this.outputsForm) {
      this.outputsForm.remove();
      this.outputsForm = null;
    }
    if (TERMINAL.has(run.status) && previous && previous.id === run.id && !TERMINAL.has(previous.status)) {
      announce(`Run ${run.status.replace('_', ' ')}`);
    }
  }

  poll() {
    clearTimeout(this.pollTimer);
    this.pollTimer = setTimeout(async () => {
      if (this.stopped || this.controller) return;
      try {
        const run = await api.get(`threads/${this.thread.id}/runs/${this.run.id}`);
        if (this.stopped) return;
        if (ACTIVE.has(this.run.status) && !ACTIVE.has(run.status)) await this.reloadMessages();
        this.setRun(run, true);
        if (ACTIVE.has(run.status)) this.poll();
      } catch (error) {
        this.appendToLog(alertBox(error));
      }
    }, 1000);
  }

  async reloadMessages() {
    const messages = await api.list(`threads/${this.thread.id}/messages`, { order: 'asc' });
    this.outputsForm = null;
    this.liveSteps.clear();
    this.log.replaceChildren(...messages.map((m) => this.messageElement(m)));
    this.scrollDown(true);
  }

  async cancel() {
    const run = this.run;
    try {
      this.setRun(await api.post(`threads/${run.thread_id}/runs/${run.id}/cancel`));
      if (!this.controller) this.poll(); // no stream open (e.g. waiting for tool outputs): follow by polling
    } catch (error) {
      this.appendToLog(alertBox(error));
    }
    this.input.focus();
  }

  askForOutputs(run) {
    const calls = run.required_action.submit_tool_outputs.tool_calls;
    const fields = calls.map((call) => {
      const output = h('textarea', { id: `output-${call.id}`, class: 'code', rows: 3, required: true, spellcheck: 'false' });
      output.addEventListener('keydown', (event) => {
        if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
          event.preventDefault();
          form.requestSubmit();
        }
      });
      return { call, output };
    });
    const submit = h('button', { type: 'submit', class: 'primary', id: 'submit-outputs' }, 'Submit outputs');
    const form = h('form', { class: 'card tool-outputs', id: 'tool-outputs', 'aria-labelledby': 'outputs-title', 'data-run-id': run.id },
      h('h2', { id: 'outputs-title' }, calls.length === 1 ? 'The assistant called a function' : `The assistant called ${calls.length} functions`),
      h('p', { class: 'hint' }, 'Type what each function returned; the outputs go to submit_tool_outputs and the run continues. Ctrl+Enter submits.'),
      fields.map(({ call, output }) => h('div', { class: 'tool-output' },
        h('p', {}, h('strong', {}, call.function.name), ' ', h('code', { class: 'muted' }, call.id)),
        h('pre', { class: 'code', 'aria-label': `Arguments of ${call.function.name}` }, pretty(call.function.arguments)),
        field(`Output of ${call.function.name}`, output))),
      h('div', { class: 'actions' }, submit));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      submit.disabled = true;
      const tool_outputs = fields.map(({ call, output }) => ({ tool_call_id: call.id, output: output.value }));
      form.remove();
      this.outputsForm = null;
      await this.stream(`threads/${run.thread_id}/runs/${run.id}/submit_tool_outputs`, { tool_outputs });
      this.input.focus();
    });
    this.outputsForm?.remove();
    this.outputsForm = form;
    this.appendToLog(form);
    form.scrollIntoView({ block: 'nearest' });
    announce('The run needs your function outputs');
    fields[0]?.output.focus();
  }

  async deleteThread() {
    try {
      await api.del(`threads/${this.thread.id}`);
    } catch (error) {
      if (error.status !== 404) {
        this.formStatus.replaceChildren(alertBox(error));
        return;
      }
    }
    forget(this.thread.id);
    announce('Thread deleted');
    this.navigate(`#/chat/${this.assistant.id}`);
  }
}

// One line per tool call for the conversation; the details open below it (and in the inspector).
function gist(call) {
  if (call.type === 'function') {
    const fn = call.function || {};
    const out = fn.output == null ? '' : ` → ${compact(fn.output)}`;
    return `${fn.name || '…'}(${compact(fn.arguments || '')})${out}`;
  }
  if (call.type === 'file_search') {
    const results = call.file_search?.results;
    return results ? `file_search → ${results.length} result${results.length === 1 ? '' : 's'}` : 'file_search';
  }
  return call.type;
}

function compact(text) {
  try {
    return JSON.stringify(JSON.parse(text));
  } catch {
    return String(text);
  }
}

// The SDK's delta rule: strings concatenate, objects merge, lists of objects merge by `index`,
// `index` and `type` are replaced.
export function merge(target, delta) {
  const out = Array.isArray(target) ? [...target] : { ...target };
  for (const [key, value] of Object.entries(delta)) {
    const current = out[key];
    if (current == null || key === 'index' || key === 'type') out[key] = structuredClone(value);
    else if (typeof current === 'string' && typeof value === 'string') out[key] = current + value;
    else if (Array.isArray(current) && Array.isArray(value)) {
      const list = [...current];
      for (const item of value) {
        if (item && typeof item === 'object' && Number.isInteger(item.index)) {
          list[item.index] = list[item.index] ? merge(list[item.index], item) : structuredClone(item);
        } else list.push(item);
      }
      out[key] = list;
    } else if (current && typeof current === 'object' && value && typeof value === 'object') out[key] = merge(current, value);
    else out[key] = value;
  }
  return out;
}
