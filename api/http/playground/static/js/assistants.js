// Assistants: the list, and a form that creates or edits one (model, instructions, tools —
// file_search, code_interpreter, installed tools, OpenAPI actions, MCP servers, functions — and tool resources).

import { api } from './api.js';
import { alertBox, announce, confirmButton, field, h, id, replace, time } from './dom.js';
import { forgetAssistant } from './threads.js';

const EMPTY_SCHEMA = '{\n  "type": "object",\n  "properties": {},\n  "required": []\n}';

export async function render(main, { assistantId }, { config, navigate }) {
  // The tools, actions, stores, files and models only matter to the form.
  const [assistants, catalogue, current] = await Promise.all([
    api.list('assistants'),
    assistantId ? loadCatalogue(config) : null,
    assistantId && assistantId !== 'new' ? api.get(`assistants/${assistantId}`) : null,
  ]);
  const content = h('section', { class: 'content', 'aria-labelledby': 'view-title' });
  replace(main, h('div', { class: 'split' }, sidebar(assistants, assistantId), content));
  if (assistantId) {
    editor(content, current, assistants, catalogue, navigate);
  } else {
    overview(content, assistants);
  }
}

async function loadCatalogue(config) {
  const optional = (promise) => promise.catch(() => []);
  const [tools, actions, mcpServers, stores, files, models] = await Promise.all([
    optional(api.get('tools').then((page) => page.data)),
    optional(api.list('actions')),
    optional(api.list('mcp_servers')),
    optional(api.list('vector_stores')),
    optional(api.get('files', { purpose: 'assistants' }).then((page) => page.data)),
    config.models ? optional(api.get('models').then((page) => page.data.map((m) => m.id))) : Promise.resolve(null),
  ]);
  return { tools, actions, mcpServers, stores, files, models };
}

function sidebar(assistants, selected) {
  const items = assistants.map((a) =>
    h('li', {},
      h('a', { href: `#/assistants/${a.id}`, 'aria-current': a.id === selected ? 'page' : null },
        h('span', { class: 'item-title' }, a.name || 'Untitled assistant'),
        h('span', { class: 'item-meta' }, a.model)),
      h('a', { class: 'item-action', href: `#/chat/${a.id}`, 'aria-label': `Chat with ${a.name || a.id}` }, 'Chat')),
  );
  return h('aside', { class: 'sidebar', 'aria-labelledby': 'assistants-title' },
    h('div', { class: 'sidebar-head' },
      h('h2', { id: 'assistants-title' }, 'Assistants'),
      h('a', { class: 'button primary', href: '#/assistants/new' }, 'New assistant')),
    items.length
      ? h('ul', { class: 'list', id: 'assistant-list' }, items)
      : h('p', { class: 'muted pad' }, 'No assistants yet.'),
  );
}

function overview(content, assistants) {
  replace(content,
    h('h1', { id: 'view-title', tabindex: '-1' }, 'Playground'),
    h('p', { class: 'lead' }, 'Everything here goes through the same public ', h('code', {}, '/v1'),
      ' API the OpenAI SDKs use, so each screen is also an example of it.'),
    h('ol', { class: 'steps-intro' },
      h('li', {}, h('a', { href: '#/assistants/new' }, 'Create an assistant'), ': model, instructions, tools (functions, file search, installed tools, OpenAPI actions) and its files.'),
      h('li', {}, 'Open ', h('strong', {}, 'Chat'), ' next to an assistant: threads, answers streamed token by token, function calls you answer yourself, citations and images.'),
      h('li', {}, 'Follow a run into the ', h('strong', {}, 'inspector'), ': its steps, tool calls with arguments and outputs, file search results, usage and timings.'),
      h('li', {}, h('a', { href: '#/files' }, 'Files & vector stores'), ': upload files and watch vector stores process them.')),
    assistants.length
      ? h('p', { class: 'muted' }, `${assistants.length} assistant${assistants.length === 1 ? '' : 's'} on this server.`)
      : h('p', { class: 'muted' }, 'No assistants yet: start with a new one.'),
  );
}

// --- the editor ---------------------------------------------------------------------------------

function toolState(tools) {
  const state = { fileSearch: null, codeInterpreter: false, builtins: new Set(), actions: new Set(), mcp: new Set(), functions: [] };
  for (const tool of tools || []) {
    const marker = tool.builtin;
    if (tool.type === 'file_search') state.fileSearch = tool;
    else if (tool.type === 'code_interpreter') state.codeInterpreter = true;
    else if (marker && marker.type === 'action') state.actions.add(marker.id);
    else if (marker && marker.type === 'mcp') state.mcp.add(marker.id);
    else if (marker) state.builtins.add(marker.type);
    else if (tool.type === 'function') state.functions.push(tool.function);
  }
  return state;
}

function editor(content, assistant, assistants, catalogue, navigate) {
  const state = toolState(assistant && assistant.tools);
  const resources = (assistant && assistant.tool_resources) || {};
  const title = assistant ? assistant.name || 'Untitled assistant' : 'New assistant';

  const name = h('input', { id: 'assistant-name', type: 'text', maxlength: 256, value: assistant?.name || '', autocomplete: 'off' });
  const knownModels = [...new Set([...(catalogue.models || []), ...assistants.map((a) => a.model)])].sort();
  const modelList = h('datalist', { id: 'model-options' }, knownModels.map((m) => h('option', { value: m })));
  const model = h('input', { id: 'assistant-model', type: 'text', required: true, list: 'model-options', value: assistant?.model || '', autocomplete: 'off', spellcheck: 'false' });
  const modelHint = catalogue.models
    ? 'Pick one of the models the server lists (GET /v1/models) or type any name.'
    : 'Any model the server’s model endpoint serves; it is passed through unchanged.';
  const description = h('input', { id: 'assistant-description', type: 'text', maxlength: 512, value: assistant?.description || '' });
  const instructions = h('textarea', { id: 'assistant-instructions', rows: 4, value: assistant?.instructions || '' });
  const temperature = h('input', { id: 'assistant-temperature', type: 'number', min: 0, max: 2, step: 0.1, value: assistant?.temperature ?? '', placeholder: '1' });
  const topP = h('input', { id: 'assistant-top-p', type: 'number', min: 0, max: 1, step: 0.05, value: assistant?.top_p ?? '', placeholder: '1' });

  // Tools
  const fileSearch = h('input', { type: 'checkbox', id: 'tool-file_search', checked: !!state.fileSearch });
  const codeInterpreter = h('input', { type: 'checkbox', id: 'tool-code_interpreter', checked: state.codeInterpreter });
  const builtinNames = new Set([...catalogue.tools.map((t) => t.type), ...state.builtins]);
  const builtinBoxes = [...builtinNames].map((type) => {
    const info = catalogue.tools.find((t) => t.type === type);
    const box = h('input', { type: 'checkbox', id: `tool-${type}`, value: type, checked: state.builtins.has(type) });
    return { box, row: check(box, type, info ? info.function.description : 'Not installed on this server any more.') };
  });
  const actionIds = new Set([...catalogue.actions.map((a) => a.id), ...state.actions]);
  const actionBoxes = [...actionIds].map((actionId) => {
    const info = catalogue.actions.find((a) => a.id === actionId);
    const box = h('input', { type: 'checkbox', id: `action-${actionId}`, value: actionId, checked: state.actions.has(actionId) });
    const label = info ? `${info.name} (${actionId})` : actionId;
    const ops = info && info.operations ? `${info.operations.length} operation${info.operations.length === 1 ? '' : 's'}` : '';
    return { box, row: check(box, label, [info?.description, ops].filter(Boolean).join(' · ')) };
  });
  const mcpIds = new Set([...catalogue.mcpServers.map((m) => m.id), ...state.mcp]);
  const mcpBoxes = [...mcpIds].map((serverId) => {
    const info = catalogue.mcpServers.find((m) => m.id === serverId);
    const box = h('input', { type: 'checkbox', id: `mcp-${serverId}`, value: serverId, checked: state.mcp.has(serverId) });
    const label = info ? `${info.name} (${serverId})` : serverId;
    const count = info && info.tools ? `${info.tools.length} tool${info.tools.length === 1 ? '' : 's'}` : '';
    return { box, row: check(box, label, [info?.description, count].filter(Boolean).join(' · ')) };
  });
  const functions = h('div', { class: 'functions' });
  for (const fn of state.functions) functions.append(functionEditor(fn));
  const addFunction = h('button', { type: 'button', onclick: () => {
    const editorEl = functionEditor(null);
    functions.append(editorEl);
    editorEl.querySelector('input').focus();
  } }, 'Add function');

  // Tool resources
  const currentStore = resources.file_search?.vector_store_ids?.[0] || '';
  const storeSelect = h('select', { id: 'assistant-vector-store' },
    h('option', { value: '' }, 'None'),
    catalogue.stores.map((s) => h('option', { value: s.id, selected: s.id === currentStore }, `${s.name || 'Unnamed'} (${s.id})`)));
  if (currentStore && !catalogue.stores.some((s) => s.id === currentStore)) {
    storeSelect.append(h('option', { value: currentStore, selected: true }, currentStore));
  }
  const codeFiles = new Set(resources.code_interpreter?.file_ids || []);
  const fileBoxes = catalogue.files.map((f) => {
    const box = h('input', { type: 'checkbox', value: f.id, checked: codeFiles.has(f.id) });
    return { box, row: check(box, f.filename, f.id) };
  });

  const status = h('p', { class: 'form-status', role: 'status' });
  const save = h('button', { type: 'submit', class: 'primary' }, assistant ? 'Save changes' : 'Create assistant');
  const form = h('form', { class: 'editor', 'aria-labelledby': 'view-title', novalidate: true },
    h('div', { class: 'grid-2' },
      field('Name', name),
      h('div', {}, field('Model', model, modelHint), modelList)),
    h('div', { class: 'grid-desc' }, field('Description', description), field('Temperature', temperature), field('Top P', topP)),
    field('Instructions', instructions, 'The system message of every run (a run may replace or extend it).'),
    h('fieldset', {},
      h('legend', {}, 'Tools'),
      check(fileSearch, 'file_search', 'Searches the vector store chosen below (and the thread’s own).'),
      check(codeInterpreter, 'code_interpreter', 'Lets the model write and run Python with the files chosen below (where the server has a code sandbox).'),
      builtinBoxes.length ? h('h3', {}, 'Installed tools (GET /v1/tools)') : null,
      builtinBoxes.map((b) => b.row),
      actionBoxes.length ? h('h3', {}, 'OpenAPI actions (GET /v1/actions)') : null,
      actionBoxes.map((b) => b.row),
      mcpBoxes.length ? h('h3', {}, 'MCP servers (GET /v1/mcp_servers)') : null,
      mcpBoxes.map((b) => b.row),
      h('h3', {}, 'Functions'),
      h('p', { class: 'hint' }, 'Your own functions: the run stops in requires_action and the chat asks you for their outputs.'),
      functions,
      addFunction),
    h('fieldset', {},
      h('legend', {}, 'Tool resources'),
      field('Vector store for file_search', storeSelect),
      h('div', { class: 'field' },
        h('span', { class: 'label', id: 'ci-files-label' }, 'Files for code_interpreter'),
        fileBoxes.length
          ? h('div', { class: 'checks', role: 'group', 'aria-labelledby': 'ci-files-label' }, fileBoxes.map((b) => b.row))
          : h('p', { class: 'hint' }, 'No files with purpose “assistants” yet (upload them under Files & vector stores).'))),
    status,
    h('div', { class: 'actions' },
      save,
      assistant ? h('a', { class: 'button', href: `#/chat/${assistant.id}` }, 'Open chat') : null,
      assistant ? confirmButton('Delete assistant', async () => {
        await api.del(`assistants/${assistant.id}`);
        forgetAssistant(assistant.id);
        announce('Assistant deleted');
        navigate('#/assistants');
      }) : null),
  );

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    status.replaceChildren();
    status.className = 'form-status';
    if (!model.value.trim()) {
      model.setCustomValidity('A model is required.');
      model.reportValidity();
      model.setCustomValidity('');
      return;
    }
    let fns;
    try {
      fns = [...functions.querySelectorAll('.function')].map(readFunction);
    } catch (problem) {
      problem.control.setCustomValidity(problem.message);
      problem.control.reportValidity();
      problem.control.addEventListener('input', () => problem.control.setCustomValidity(''), { once: true });
      return;
    }
    const tools = [];
    if (fileSearch.checked) tools.push(state.fileSearch || { type: 'file_search' });
    if (codeInterpreter.checked) tools.push({ type: 'code_interpreter' });
    for (const b of builtinBoxes) if (b.box.checked) tools.push({ type: b.box.value });
    for (const b of actionBoxes) if (b.box.checked) tools.push({ type: 'action', id: b.box.value });
    for (const b of mcpBoxes) if (b.box.checked) tools.push({ type: 'mcp', id: b.box.value });
    for (const fn of fns) tools.push({ type: 'function', function: fn });
    const body = {
      name: name.value.trim() || null,
      model: model.value.trim(),
      description: description.value.trim() || null,
      instructions: instructions.value || null,
      tools,
      tool_resources: {
        file_search: { vector_store_ids: storeSelect.value ? [storeSelect.value] : [] },
        code_interpreter: { file_ids: fileBoxes.filter((b) => b.box.checked).map((b) => b.box.value) },
      },
      temperature: temperature.value === '' ? null : Number(temperature.value),
      top_p: topP.value === '' ? null : Number(topP.value),
    };
    save.disabled = true;
    try {
      const saved = await api.post(assistant ? `assistants/${assistant.id}` : 'assistants', body);
      announce(assistant ? 'Assistant saved' : 'Assistant created');
      navigate(`#/assistants/${saved.id}`);
    } catch (error) {
      status.replaceChildren(alertBox(error));
      save.disabled = false;
    }
  });

  replace(content,
    h('div', { class: 'content-head' },
      h('h1', { id: 'view-title', tabindex: '-1' }, title),
      assistant ? h('p', { class: 'muted' }, h('code', {}, assistant.id), ` · created ${time(assistant.created_at)}`) : null),
    form);
}

function check(box, label, hint) {
  if (!box.id) box.id = id('check');
  const hintEl = hint ? h('span', { class: 'hint', id: id('hint') }, hint) : null;
  if (hintEl) box.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'check' }, box, h('div', {}, h('label', { for: box.id, class: 'check-label' }, label), hintEl));
}

let functionCount = 0;

function functionEditor(fn) {
  functionCount += 1;
  const n = functionCount;
  const name = h('input', { type: 'text', class: 'fn-name', required: true, maxlength: 64, pattern: '[a-zA-Z0-9_\\-]{1,64}', value: fn?.name || '', autocomplete: 'off', spellcheck: 'false' });
  const description = h('input', { type: 'text', class: 'fn-description', value: fn?.description || '' });
  const parameters = h('textarea', { class: 'fn-parameters code', rows: 6, spellcheck: 'false', value: fn?.parameters ? JSON.stringify(fn.parameters, null, 2) : EMPTY_SCHEMA });
  const strict = h('input', { type: 'checkbox', class: 'fn-strict', checked: !!fn?.strict });
  const box = h('fieldset', { class: 'function' },
    h('legend', {}, `Function ${n}`),
    h('div', { class: 'grid-2' },
      field('Function name', name, 'Letters, digits, _ and -, at most 64.'),
      field('Function description', description)),
    field('Parameters (JSON schema)', parameters),
    check(strict, 'strict', 'Ask the model to follow the schema exactly.'),
    h('button', { type: 'button', class: 'link danger', onclick: () => box.remove() }, `Remove function ${n}`));
  return box;
}

function readFunction(box) {
  const name = box.querySelector('.fn-name');
  const parameters = box.querySelector('.fn-parameters');
  const fail = (control, message) => Object.assign(new Error(message), { control });
  if (!/^[a-zA-Z0-9_-]{1,64}$/.test(name.value)) throw fail(name, 'Use 1 to 64 letters, digits, _ or -.');
  let schema;
  try {
    schema = JSON.parse(parameters.value || '{}');
  } catch (error) {
    throw fail(parameters, `Not valid JSON: ${error.message}`);
  }
  if (!schema || typeof schema !== 'object' || Array.isArray(schema)) throw fail(parameters, 'The schema must be a JSON object.');
  const description = box.querySelector('.fn-description').value.trim();
  return {
    name: name.value,
    ...(description ? { description } : {}),
    parameters: schema,
    strict: box.querySelector('.fn-strict').checked,
  };
}
