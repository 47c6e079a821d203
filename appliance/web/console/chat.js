// The chat page: streamed answers rendered as safe Markdown, Stop, conversations kept in the
// appliance's session memory (X-Session-Id) and reopened from it, and plain-language notices
// when a guard acts.
import { $, h, clear, copyText } from './dom.js';
import { renderMarkdown } from './markdown.js';
import { explainError } from './guardtext.js';
import { newSessionId } from './store.js';

const TOPIC_TITLES = { emergency: 'Emergency' };

function titleOf(text) {
  const line = text.trim().split('\n')[0];
  return line.length > 60 ? `${line.slice(0, 57)}…` : line;
}

export class ChatView {
  constructor(api, me, conversations, { onSignedOut }) {
    this.api = api;
    this.conversations = conversations;
    this.canRemember = me.scopes.includes('memory') || me.scopes.includes('admin');
    this.onSignedOut = onSignedOut;
    this.current = null; // the session id of the open conversation
    this.controller = null; // the running answer's AbortController
    this.lastQuestion = '';
    this.lastReply = null;
    this.bind();
    this.renderList();
    this.loadModels();
  }

  get streaming() { return this.controller !== null; }

  bind() {
    const input = $('chat-input');
    $('chat-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const text = input.value;
      if (!text.trim() || this.streaming) return;
      input.value = '';
      this.send(text);
    });
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        $('chat-form').requestSubmit();
      }
    });
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && this.streaming) { e.preventDefault(); this.stop(); }
    });
    $('chat-stop').addEventListener('click', () => this.stop());
    $('chat-new').addEventListener('click', () => this.newConversation());
    const box = $('chat-messages');
    box.addEventListener('scroll', () => {
      box.dataset.follow = String(box.scrollHeight - box.scrollTop - box.clientHeight < 40);
    });
    const temp = $('chat-temperature');
    temp.addEventListener('input', () => { $('chat-temperature-value').textContent = temp.value; });
    $('chat-no-memory').hidden = this.canRemember;
  }

  async loadModels() {
    const select = $('chat-model');
    try {
      const { data } = await this.api.get('/v1/models');
      clear(select);
      for (const m of data.filter((x) => x.id !== 'default')) {
        select.append(h('option', { value: m.loaded ? 'default' : m.id, disabled: !m.loaded,
          text: m.loaded ? m.id : `${m.id} (not loaded)` }));
      }
    } catch {
      select.append(h('option', { value: 'default', text: 'default' }));
    }
  }

  renderList() {
    const list = clear($('chat-conversations'));
    if (!this.canRemember) return;
    for (const c of this.conversations.list()) {
      const item = h('li', { class: c.id === this.current ? 'active' : '' },
        h('button', { type: 'button', class: 'conv', dataset: { session: c.id },
          onclick: () => this.open(c.id) },
        h('span', { class: 'conv-title', text: c.title || 'Conversation' }),
        h('span', { class: 'conv-time', text: new Date(c.time).toLocaleString('en-GB', {
          month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit' }) })));
      list.append(item);
    }
  }

  newConversation() {
    if (this.streaming) this.stop();
    this.current = null;
    this.lastQuestion = '';
    this.lastReply = null;
    clear($('chat-messages')).append(this.emptyNote());
    this.renderList();
    $('chat-input').focus();
  }

  emptyNote() {
    return h('div', { class: 'empty', id: 'chat-empty' }, h('h2', { text: 'How can I help?' }),
      h('p', { class: 'muted', text: 'Answers are generated on this appliance; nothing leaves '
        + 'the building. Personal data is removed before the assistant sees it.' }));
  }

  // A conversation reopened from the appliance's session memory.
  async open(id) {
    if (this.streaming) this.stop();
    this.current = id;
    this.renderList();
    const box = clear($('chat-messages'));
    try {
      const { data } = await this.api.get(
        `/v1/memory?scope=session&session_id=${encodeURIComponent(id)}`);
      const ordered = [...data.filter((e) => e.kind !== 'turn'), ...data.filter((e) => e.kind === 'turn')];
      for (const e of ordered) {
        if (e.kind !== 'turn') {
          box.append(h('div', { class: 'summary' }, h('strong', { text: 'Earlier in this conversation: ' }), e.content));
        } else if (e.role === 'user') {
          this.addMessage('user').body.textContent = e.content;
          this.lastQuestion = e.content;
        } else {
          this.lastReply = this.addMessage('assistant');
          this.finishReply(this.lastReply, e.content);
        }
      }
      if (!data.length) {
        box.append(h('p', { class: 'muted center', text: 'Nothing is remembered of this '
          + 'conversation any more (turns are kept for a day).' }));
      }
    } catch (err) {
      this.showError(this.addMessage('assistant'), err);
    }
  }

  addMessage(role) {
    const empty = $('chat-empty');
    if (empty) empty.remove();
    const body = h('div', { class: 'msg-body' });
    const notes = h('div', { class: 'msg-notes' });
    const actions = h('div', { class: 'msg-actions' });
    const el = h('article', { class: `msg ${role}`, dataset: { role } },
      h('div', { class: 'msg-who', text: role === 'user' ? 'You' : 'Assistant' }), body, notes, actions);
    $('chat-messages').append(el);
    this.scroll(true);
    return { el, body, notes, actions, text: '' };
  }

  // Follows the conversation while the reader is at its end; leaves it where they scrolled.
  scroll(force = false) {
    const box = $('chat-messages');
    if (force || this.following) box.scrollTop = box.scrollHeight;
  }

  get following() {
    const box = $('chat-messages');
    return box.dataset.follow !== 'false';
  }

  setStreaming(on) {
    $('chat-send').hidden = on;
    $('chat-stop').hidden = !on;
    document.body.classList.toggle('streaming', on);
  }

  stop() {
    if (this.controller) this.controller.abort();
  }

  note(msg, cls, ...content) {
    msg.notes.append(h('div', { class: `note ${cls}` }, ...content));
    this.scroll();
  }

  render(reply, text) {
    reply.text = text;
    if (reply.frame) return;
    reply.frame = requestAnimationFrame(() => {
      reply.frame = null;
      reply.body.replaceChildren(renderMarkdown(reply.text));
      this.scroll();
    });
  }

  finishReply(reply, text) {
    if (reply.frame) cancelAnimationFrame(reply.frame);
    reply.frame = null;
    reply.text = text;
    reply.body.replaceChildren(renderMarkdown(text));
    reply.el.classList.remove('pending');
    const copy = h('button', { type: 'button', class: 'small ghost', text: 'Copy',
      onclick: () => copyText(reply.text, copy) });
    const again = h('button', { type: 'button', class: 'small ghost regenerate', text: 'Regenerate',
      onclick: () => this.regenerate(reply) });
    reply.actions.replaceChildren(copy, again);
    this.scroll();
  }

  showError(reply, err) {
    const { title, text, advice, blocked, signIn } = explainError(err);
    reply.el.classList.remove('pending');
    reply.el.classList.add(blocked ? 'blocked' : 'failed');
    reply.body.replaceChildren(h('div', { class: 'notice' }, h('strong', { class: 'notice-title', text: title }),
      text ? h('p', { text }) : null, advice ? h('p', { class: 'advice', text: advice }) : null,
      signIn ? h('button', { type: 'button', class: 'primary small', text: 'Sign in again',
        onclick: () => this.onSignedOut('') }) : null));
    this.scroll();
  }

  body(text) {
    const max = Number($('chat-max-tokens').value);
    return { model: $('chat-model').value || 'default', messages: [{ role: 'user', content: text }],
      temperature: Number($('chat-temperature').value),
      ...(Number.isFinite(max) && max > 0 ? { max_tokens: Math.floor(max) } : {}) };
  }

  onExtra(extra, user, reply, state) {
    if (extra.input_redacted && user) {
      user.body.textContent = extra.input_redacted;
      user.el.classList.add('redacted');
      this.note(user, 'note-redacted', 'Personal data was removed before the assistant saw this message.');
      state.title = titleOf(extra.input_redacted);
    }
    if (extra.topic) {
      reply.el.classList.add('topic', `topic-${extra.topic}`);
      this.note(reply, 'note-topic', h('strong', { text: TOPIC_TITLES[extra.topic] || extra.topic }),
        ' — this is the appliance’s fixed answer for this topic, not a generated one.');
    }
  }

  async send(text, { again = false } = {}) {
    if (this.streaming) return;
    if (!this.current) this.current = newSessionId();
    const session = this.current;
    const user = again ? null : this.addMessage('user');
    if (user) user.body.textContent = text;
    const reply = this.addMessage('assistant');
    reply.el.classList.add('pending');
    this.lastQuestion = text;
    this.lastReply = reply;
    const state = { title: titleOf(text), content: '', lastDelta: '', finish: null };
    this.controller = new AbortController();
    this.setStreaming(true);
    try {
      await this.api.streamChat(this.body(text), { sessionId: session, signal: this.controller.signal,
        onChunk: (chunk) => this.onChunk(chunk, user, reply, state) });
      this.finishReply(reply, state.content);
      this.onFinish(reply, state);
      if (this.canRemember) this.conversations.upsert(session, state.title);
      this.renderList();
    } catch (err) {
      if (err.name === 'AbortError') {
        this.finishReply(reply, state.content);
        reply.el.classList.add('stopped');
        this.note(reply, 'note-stopped', 'Stopped. The rest of this answer was not generated.');
      } else {
        this.showError(reply, err);
      }
    } finally {
      this.controller = null;
      this.setStreaming(false);
    }
  }

  onChunk(chunk, user, reply, state) {
    if (chunk.x_appliance) this.onExtra(chunk.x_appliance, user, reply, state);
    const choice = chunk.choices && chunk.choices[0];
    if (!choice) return;
    const delta = choice.delta && choice.delta.content;
    if (delta) {
      state.content += delta;
      state.lastDelta = delta;
      this.render(reply, state.content);
    }
    if (choice.finish_reason) state.finish = choice.finish_reason;
  }

  onFinish(reply, state) {
    if (state.finish === 'content_filter') {
      // The output rail ended the answer: its last piece is the policy's message.
      const kept = state.content.slice(0, state.content.length - state.lastDelta.length);
      reply.text = kept;
      reply.body.replaceChildren(renderMarkdown(kept));
      reply.el.classList.add('withheld');
      this.note(reply, 'note-withheld', h('strong', { text: 'Answer withheld. ' }), state.lastDelta);
    } else if (state.finish === 'length') {
      this.note(reply, 'note-length', 'The answer reached the “Max tokens” limit.');
    }
  }

  // A new answer to the last question; the old exchange leaves the session memory first.
  async regenerate(reply) {
    if (this.streaming || !this.lastQuestion || reply !== this.lastReply) return;
    if (this.canRemember && this.current) {
      try {
        const { data } = await this.api.get(
          `/v1/memory?scope=session&session_id=${encodeURIComponent(this.current)}`);
        const turns = data.filter((e) => e.kind === 'turn').slice(-2);
        if (turns.length === 2 && turns[0].role === 'user' && turns[1].role === 'assistant') {
          for (const t of turns) await this.api.request('DELETE', `/v1/memory/${t.id}`);
        }
      } catch {
        // the answer is regenerated all the same; the old turns stay in the context
      }
    }
    reply.el.remove();
    await this.send(this.lastQuestion, { again: true });
  }
}
