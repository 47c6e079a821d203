// What the console keeps in the browser: the API key (for this tab only, unless "remember on
// this computer" was ticked) and the list of conversations (id, title, time), kept where the
// key is. Conversation turns are not kept here: they live in the appliance's session memory.
const KEY = 'appliance.key';
const CONVERSATIONS = 'appliance.conversations';
const MAX_CONVERSATIONS = 50;

function storages() {
  return [window.sessionStorage, window.localStorage];
}

export function savedKey() {
  for (const s of storages()) {
    const key = s.getItem(KEY);
    if (key) return { key, remembered: s === window.localStorage };
  }
  return null;
}

export function saveKey(key, remember) {
  forgetKey();
  (remember ? window.localStorage : window.sessionStorage).setItem(KEY, key);
}

export function forgetKey() {
  for (const s of storages()) s.removeItem(KEY);
}

export class Conversations {
  // owner: the key's name (lists of different keys are kept apart); persistent: localStorage
  constructor(owner, persistent) {
    this.storage = persistent ? window.localStorage : window.sessionStorage;
    this.slot = `${CONVERSATIONS}.${owner}`;
  }

  list() {
    try {
      const items = JSON.parse(this.storage.getItem(this.slot) || '[]');
      return Array.isArray(items) ? items : [];
    } catch {
      return [];
    }
  }

  save(items) {
    this.storage.setItem(this.slot, JSON.stringify(items.slice(0, MAX_CONVERSATIONS)));
  }

  upsert(id, title) {
    const items = this.list().filter((c) => c.id !== id);
    const old = this.list().find((c) => c.id === id);
    items.unshift({ id, title: old && old.title ? old.title : title, time: Date.now() });
    this.save(items);
  }

  remove(id) {
    this.save(this.list().filter((c) => c.id !== id));
  }
}

export function newSessionId() {
  // getRandomValues works outside secure contexts too (a console served over plain http)
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `console-${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}
