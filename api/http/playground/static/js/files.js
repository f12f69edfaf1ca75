// Files and vector stores: upload (POST /v1/files, multipart), download, delete; create vector
// stores, add files to them and watch each file's processing status until it settles.

import { api, download } from './api.js';
import { alertBox, announce, badge, bytes, clock, confirmButton, field, h, replace, time } from './dom.js';

const PURPOSES = ['assistants', 'vision', 'user_data', 'batch', 'fine-tune', 'evals'];

export async function render(main, { vectorStoreId }, { navigate }) {
  const view = new FilesView(main, vectorStoreId, navigate);
  await view.start();
  return () => view.stop();
}

class FilesView {
  constructor(main, vectorStoreId, navigate) {
    this.main = main;
    this.selected = vectorStoreId || null;
    this.navigate = navigate;
    this.timer = null;
    this.stopped = false;
    this.files = [];
    this.stores = [];
  }

  // The forms are built once; refreshes (every second while something is processing) replace only
  // the lists, tables and facts, so a half-filled form keeps its values and focus.
  async start() {
    this.filesList = h('div', { id: 'files-list' });
    this.storeList = h('div', { id: 'stores-list' });
    this.detail = h('div', { id: 'store-detail' });
    const filesCard = h('section', { class: 'card', 'aria-labelledby': 'files-title' },
      h('h2', { id: 'files-title' }, 'Files'), this.uploadForm(), this.filesList);
    const storesCard = h('section', { class: 'card', 'aria-labelledby': 'stores-title' },
      h('h2', { id: 'stores-title' }, 'Vector stores'), this.createForm(), this.storeList, this.detail);
    this.storesCard = storesCard;
    replace(this.main, h('div', { class: 'page' },
      h('h1', { id: 'view-title', tabindex: '-1' }, 'Files & vector stores'),
      h('div', { class: 'grid-files' }, filesCard, storesCard)));
    await this.refresh();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  async refresh() {
    clearTimeout(this.timer);
    const [files, stores] = await Promise.all([api.get('files').then((page) => page.data), api.list('vector_stores')]);
    if (this.selected && !stores.some((s) => s.id === this.selected)) this.selected = null;
    const storeFiles = this.selected ? await api.list(`vector_stores/${this.selected}/files`) : [];
    if (this.stopped) return;
    this.files = files;
    this.stores = stores;
    this.renderFiles();
    this.renderStores(storeFiles);
    const busy = stores.some((s) => s.status === 'in_progress') || storeFiles.some((f) => f.status === 'in_progress');
    if (busy) this.timer = setTimeout(() => this.refresh().catch((e) => this.showError(e)), 1000);
  }

  showError(error) {
    this.storeList.prepend(alertBox(error));
  }

  filename(fileId) {
    const file = this.files.find((f) => f.id === fileId);
    return file ? file.filename : fileId;
  }

  // --- files ------------------------------------------------------------------------------------

  uploadForm() {
    const input = h('input', { type: 'file', id: 'upload-file', multiple: true, required: true });
    const purpose = h('select', { id: 'upload-purpose' }, PURPOSES.map((p) => h('option', { value: p }, p)));
    this.uploadStore = h('select', { id: 'upload-store' }, h('option', { value: '' }, 'No'));
    const store = this.uploadStore;
    const status = h('div', { class: 'form-status', role: 'status' });
    const submit = h('button', { type: 'submit', class: 'primary', id: 'upload' }, 'Upload');
    const form = h('form', { class: 'upload', 'aria-label': 'Upload files' },
      h('div', { class: 'grid-3' },
        field('Files to upload', input),
        field('Purpose', purpose),
        field('Add to vector store', store)),
      status,
      h('div', { class: 'actions' }, submit));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (!input.files.length) {
        input.reportValidity();
        return;
      }
      submit.disabled = true;
      status.replaceChildren(h('p', {}, 'Uploading…'));
      try {
        const uploaded = [];
        for (const file of input.files) uploaded.push(await api.upload(file, purpose.value));
        if (store.value) {
          if (uploaded.length === 1) await api.post(`vector_stores/${store.value}/files`, { file_id: uploaded[0].id });
          else await api.post(`vector_stores/${store.value}/file_batches`, { file_ids: uploaded.map((f) => f.id) });
        }
        const names = uploaded.map((f) => f.filename).join(', ');
        status.replaceChildren(h('p', {}, `Uploaded ${names}.`));
        announce(`Uploaded ${names}`);
        input.value = '';
        if (store.value && store.value !== this.selected) {
          this.navigate(`#/files/${store.value}`);
          return;
        }
        await this.refresh();
      } catch (error) {
        status.replaceChildren(alertBox(error));
      } finally {
        submit.disabled = false;
      }
    });
    return form;
  }

  renderFiles() {
    const keep = this.uploadStore.value || this.selected || '';
    replace(this.uploadStore, h('option', { value: '' }, 'No'),
      this.stores.map((s) => h('option', { value: s.id, selected: s.id === keep }, s.name || s.id)));

    const rows = this.files.map((file) => h('tr', { 'data-file-id': file.id },
      h('th', { scope: 'row' }, file.filename, h('span', { class: 'cell-meta' }, h('code', {}, file.id), ` · ${clock(file.created_at)}`)),
      h('td', { class: 'nowrap' }, bytes(file.bytes)),
      h('td', {}, file.purpose),
      h('td', {}, badge(file.status || 'uploaded')),
      h('td', { class: 'row-actions' },
        h('button', { type: 'button', class: 'link', 'aria-label': `Download ${file.filename}`, onclick: () => download(file.id) }, 'Download'),
        confirmButton('Delete', async () => {
          await api.del(`files/${file.id}`);
          announce(`Deleted ${file.filename}`);
          await this.refresh();
        }, 'link danger'))));
    replace(this.filesList, this.files.length
      ? h('div', { class: 'table-wrap' }, h('table', { id: 'file-table' },
        h('caption', { class: 'visually-hidden' }, 'Uploaded files'),
        h('thead', {}, h('tr', {}, ['Name', 'Size', 'Purpose', 'Status', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows)))
      : h('p', { class: 'muted' }, 'No files yet.'));
  }

  // --- vector stores ------------------------------------------------------------------------------

  createForm() {
    const name = h('input', { type: 'text', id: 'store-name', maxlength: 256, autocomplete: 'off' });
    const days = h('input', { type: 'number', id: 'store-days', min: 1, max: 365, placeholder: 'never' });
    const status = h('div', { class: 'form-status', role: 'status' });
    const create = h('form', { class: 'inline-form', 'aria-label': 'New vector store' },
      field('Name', name), field('Expire after idle days', days),
      h('button', { type: 'submit', class: 'primary', id: 'create-store' }, 'Create vector store'), status);
    create.addEventListener('submit', async (event) => {
      event.preventDefault();
      const body = { name: name.value.trim() || null };
      if (days.value) body.expires_after = { anchor: 'last_active_at', days: Number(days.value) };
      try {
        const store = await api.post('vector_stores', body);
        announce(`Vector store ${store.name || store.id} created`);
        this.navigate(`#/files/${store.id}`);
      } catch (error) {
        status.replaceChildren(alertBox(error));
      }
    });
    return create;
  }

  renderStores(storeFiles) {
    replace(this.storeList, this.stores.length
      ? h('ul', { class: 'list stores', id: 'store-list' }, this.stores.map((s) =>
        h('li', {}, h('a', { href: `#/files/${s.id}`, 'aria-current': s.id === this.selected ? 'page' : null },
          h('span', { class: 'item-title' }, s.name || 'Unnamed store', ' ', badge(s.status)),
          h('span', { class: 'item-meta' }, `${s.file_counts.completed} of ${s.file_counts.total} files ready · ${bytes(s.usage_bytes)}`)))))
      : h('p', { class: 'muted' }, 'No vector stores yet.'));
    const selected = this.stores.find((s) => s.id === this.selected);
    if (!selected) {
      this.detail.replaceChildren();
      this.shown = null;
      return;
    }
    if (this.shown !== selected.id) {
      this.shown = selected.id;
      this.buildDetail(selected);
    }
    this.updateDetail(selected, storeFiles);
  }

  buildDetail(store) {
    this.detailHead = h('h3', { id: 'store-title' });
    this.detailFacts = h('dl', { class: 'facts small' });
    this.detailFiles = h('div');
    this.addPick = h('select', { id: 'store-add-file' });
    this.addButton = h('button', { type: 'submit' }, 'Add file');
    const status = h('div', { class: 'form-status', role: 'status' });
    const add = h('form', { class: 'inline-form', 'aria-label': 'Add a file to the vector store' },
      field('Add an uploaded file', this.addPick), this.addButton, status);
    add.addEventListener('submit', async (event) => {
      event.preventDefault();
      status.replaceChildren();
      try {
        await api.post(`vector_stores/${store.id}/files`, { file_id: this.addPick.value });
        await this.refresh();
      } catch (error) {
        status.replaceChildren(alertBox(error));
      }
    });
    replace(this.detail, h('section', { class: 'store-detail', 'aria-labelledby': 'store-title' },
      this.detailHead, this.detailFacts, add, this.detailFiles,
      h('div', { class: 'actions' }, confirmButton('Delete vector store', async () => {
        await api.del(`vector_stores/${store.id}`);
        announce('Vector store deleted');
        this.navigate('#/files');
      }))));
  }

  updateDetail(store, storeFiles) {
    const counts = store.file_counts;
    replace(this.detailHead, store.name || 'Unnamed store', ' ', badge(store.status));
    replace(this.detailFacts,
      h('dt', {}, 'Id'), h('dd', {}, h('code', {}, store.id)),
      h('dt', {}, 'Files'), h('dd', { id: 'store-counts' },
        `${counts.completed} completed, ${counts.in_progress} in progress, ${counts.failed} failed, ${counts.cancelled} cancelled (${counts.total} in all)`),
      h('dt', {}, 'Size'), h('dd', {}, bytes(store.usage_bytes)),
      h('dt', {}, 'Last active'), h('dd', {}, time(store.last_active_at)),
      h('dt', {}, 'Expires'), h('dd', {}, store.expires_at ? time(store.expires_at) : 'never'));

    const inStore = new Set(storeFiles.map((f) => f.id));
    const candidates = this.files.filter((f) => !inStore.has(f.id) && f.purpose === 'assistants');
    const shown = [...this.addPick.options].map((o) => o.value).join();
    if (shown !== candidates.map((f) => f.id).join()) {
      const keep = this.addPick.value;
      replace(this.addPick, candidates.map((f) => h('option', { value: f.id, selected: f.id === keep }, f.filename)));
    }
    this.addButton.disabled = !candidates.length;

    const rows = storeFiles.map((vf) => h('tr', { 'data-file-id': vf.id },
      h('th', { scope: 'row' }, this.filename(vf.id), h('span', { class: 'cell-meta' }, h('code', {}, vf.id), ` · added ${clock(vf.created_at)}`)),
      h('td', {}, badge(vf.status), vf.last_error ? h('p', { class: 'error-text' }, `${vf.last_error.code}: ${vf.last_error.message}`) : null),
      h('td', { class: 'nowrap' }, bytes(vf.usage_bytes)),
      h('td', { class: 'row-actions' }, confirmButton('Remove', async () => {
        await api.del(`vector_stores/${store.id}/files/${vf.id}`);
        await this.refresh();
      }, 'link danger'))));
    replace(this.detailFiles, storeFiles.length
      ? h('div', { class: 'table-wrap' }, h('table', { id: 'store-files' },
        h('caption', { class: 'visually-hidden' }, `Files of ${store.name || store.id}`),
        h('thead', {}, h('tr', {}, ['File', 'Status', 'Size', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows)))
      : h('p', { class: 'muted' }, 'No files in this store yet.'));
  }
}
