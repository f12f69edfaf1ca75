// Rendering of the API's message content and run-step tool calls, shared by the chat and the
// run inspector. Shapes follow the Assistants v2 contract.

import { download, fileObject, fileUrl } from './api.js';
import { bytes, h, pretty } from './dom.js';

// --- message content ----------------------------------------------------------------------------

// One content part: text (with file_citation / file_path annotations), image_file, image_url, refusal.
export function contentPart(part, context) {
  if (part.type === 'text') return textPart(part.text, context);
  if (part.type === 'image_file') return imageFile(part.image_file.file_id);
  if (part.type === 'image_url') {
    // Shown as a link: the playground itself loads nothing from other hosts.
    return h('p', { class: 'image-url' }, 'Image: ',
      h('a', { href: part.image_url.url, target: '_blank', rel: 'noopener noreferrer' }, part.image_url.url));
  }
  if (part.type === 'refusal') return h('p', { class: 'refusal' }, `Refused: ${part.refusal}`);
  return h('pre', { class: 'code' }, JSON.stringify(part, null, 2));
}

// Text with its annotations: each file_citation marker becomes a numbered reference to a
// footnote naming the cited file; each file_path link becomes a download button.
export function textPart(text, context = {}) {
  const value = text.value || '';
  const annotations = (text.annotations || [])
    .filter((a) => Number.isInteger(a.start_index) && Number.isInteger(a.end_index))
    .sort((a, b) => a.start_index - b.start_index);
  const body = h('div', { class: 'text' });
  const notes = [];
  let at = 0;
  const prefix = context.idPrefix || 'm';
  for (const annotation of annotations) {
    if (annotation.start_index < at) continue;
    body.append(value.slice(at, annotation.start_index));
    if (annotation.type === 'file_citation') {
      const n = notes.length + 1;
      const noteId = `${prefix}-cite-${n}`;
      notes.push({ n, noteId, annotation });
      body.append(h('sup', {}, h('a', { class: 'cite', href: `#${noteId}`, 'aria-label': `Citation ${n}`, onclick: (event) => {
        event.preventDefault();
        document.getElementById(noteId)?.focus();
      } }, `[${n}]`)));
    } else if (annotation.type === 'file_path') {
      const fileId = annotation.file_path.file_id;
      const button = h('button', { type: 'button', class: 'link file-path', onclick: () => download(fileId) }, annotation.text);
      fileObject(fileId).then((file) => {
        if (file) button.textContent = `Download ${file.filename}`;
      });
      body.append(button);
    } else {
      body.append(value.slice(annotation.start_index, annotation.end_index));
    }
    at = annotation.end_index;
  }
  body.append(value.slice(at));
  if (!notes.length) return body;
  const list = h('ol', { class: 'citations', 'aria-label': 'Citations' },
    notes.map(({ n, noteId, annotation }) => {
      const fileId = annotation.file_citation.file_id;
      const name = h('span', { class: 'cite-file' }, fileId);
      fileObject(fileId).then((file) => {
        if (file) name.textContent = file.filename;
      });
      return h('li', { id: noteId, tabindex: '-1', value: n },
        name, ' ', h('code', { class: 'muted' }, fileId),
        annotation.file_citation.quote ? h('q', {}, annotation.file_citation.quote) : null,
        h('span', { class: 'visually-hidden' }, ` (marker ${annotation.text})`));
    }));
  return h('div', {}, body, list);
}

export function imageFile(fileId) {
  const img = h('img', { class: 'image-file', alt: `Image ${fileId}` });
  const figure = h('figure', { class: 'image' }, img, h('figcaption', { class: 'muted' }, fileId));
  fileObject(fileId).then((file) => {
    if (file) img.alt = `Image ${file.filename}`;
  });
  fileUrl(fileId).then(
    (src) => {
      img.src = src;
    },
    (error) => figure.replaceChildren(h('p', { class: 'error' }, `Image ${fileId} could not be loaded: ${error.message}`)),
  );
  return figure;
}

// --- tool calls ---------------------------------------------------------------------------------

// A tool call of a run step: function (name, arguments, output), file_search (ranking options,
// results with their content), code_interpreter (input, logs and image outputs).
export function toolCall(call) {
  if (call.type === 'function') {
    const fn = call.function || {};
    return h('div', { class: 'tool-call' },
      h('p', { class: 'tool-head' }, h('span', { class: 'tool-type' }, 'function'), ' ', h('strong', {}, fn.name || '…'),
        ' ', h('code', { class: 'muted' }, call.id || '')),
      h('p', { class: 'label' }, 'Arguments'),
      h('pre', { class: 'code' }, pretty(fn.arguments) || '—'),
      h('p', { class: 'label' }, 'Output'),
      fn.output == null ? h('p', { class: 'muted' }, 'No output yet.') : h('pre', { class: 'code' }, pretty(fn.output)));
  }
  if (call.type === 'file_search') {
    const search = call.file_search || {};
    const results = search.results || [];
    const ranking = search.ranking_options;
    return h('div', { class: 'tool-call' },
      h('p', { class: 'tool-head' }, h('span', { class: 'tool-type' }, 'file_search'), ' ',
        h('strong', {}, `${results.length} result${results.length === 1 ? '' : 's'}`), ' ', h('code', { class: 'muted' }, call.id || '')),
      ranking ? h('p', { class: 'muted' }, `Ranker ${ranking.ranker}, score threshold ${ranking.score_threshold}`) : null,
      results.length
        ? h('ol', { class: 'results' }, results.map((r) =>
          h('li', {},
            h('p', {}, h('strong', {}, r.file_name || r.file_id), ' ', h('span', { class: 'muted' }, `score ${Number(r.score).toFixed(3)} · `), h('code', { class: 'muted' }, r.file_id)),
            (r.content || []).map((c) => h('blockquote', { class: 'chunk' }, c.text ?? JSON.stringify(c))))))
        : null);
  }
  if (call.type === 'code_interpreter') {
    const code = call.code_interpreter || {};
    return h('div', { class: 'tool-call' },
      h('p', { class: 'tool-head' }, h('span', { class: 'tool-type' }, 'code_interpreter'), ' ', h('code', { class: 'muted' }, call.id || '')),
      h('p', { class: 'label' }, 'Input'),
      h('pre', { class: 'code' }, code.input || '—'),
      h('p', { class: 'label' }, 'Outputs'),
      (code.outputs || []).length
        ? (code.outputs || []).map((out) => {
          if (out.type === 'logs') return h('pre', { class: 'code logs' }, out.logs);
          if (out.type === 'image') return imageFile(out.image.file_id);
          return h('pre', { class: 'code' }, JSON.stringify(out, null, 2));
        })
        : h('p', { class: 'muted' }, 'No outputs yet.'));
  }
  return h('pre', { class: 'code' }, JSON.stringify(call, null, 2));
}

export function usage(u) {
  if (!u) return '—';
  return `${u.prompt_tokens} prompt + ${u.completion_tokens} completion = ${u.total_tokens} tokens`;
}

export function fileLabel(file) {
  return `${file.filename} · ${bytes(file.bytes)}`;
}
