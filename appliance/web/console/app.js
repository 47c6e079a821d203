// The console's entry point: sign-in, what the key may do (scopes) and the two pages.
import { $, h, clear, copyText } from './dom.js';
import { Api } from './api.js';
import { ChatView } from './chat.js';
import { OpsView } from './ops.js';
import { Conversations, forgetKey, saveKey, savedKey } from './store.js';

const NOTICE = 'appliance.signin-notice';

const app = { me: null, chat: null, ops: null };

function can(scope) {
  return app.me.scopes.includes(scope) || app.me.scopes.includes('admin');
}

function showView(name) {
  for (const v of ['signin', 'chat', 'ops']) $(`view-${v}`).hidden = v !== name;
  for (const v of ['chat', 'ops']) $(`nav-${v}`).classList.toggle('active', v === name);
  if (app.ops) app.ops.setVisible(name === 'ops');
  document.body.dataset.view = name;
}

function route() {
  if (!app.me) return;
  const wanted = window.location.hash.replace('#', '');
  const allowed = [can('chat') ? 'chat' : null, can('admin') ? 'ops' : null].filter(Boolean);
  if (!allowed.length) {
    showView('signin');
    signInError('This key can use neither the chat (chat scope) nor the operations page (admin scope).');
    return;
  }
  const view = allowed.includes(wanted) ? wanted : allowed[0];
  if (view === 'chat' && !app.chat) {
    app.chat = new ChatView(app.api, app.me, new Conversations(app.me.name, app.remembered),
      { onSignedOut: signOut });
  }
  if (view === 'ops' && !app.ops) app.ops = new OpsView(app.api, app.me);
  showView(view);
}

function signInError(text) {
  const el = $('signin-error');
  el.textContent = text;
  el.hidden = !text;
}

function signOut(notice = '') {
  forgetKey();
  if (notice) sessionStorage.setItem(NOTICE, notice);
  window.location.hash = '';
  window.location.reload();
}

function enter(api, me, remembered) {
  Object.assign(app, { api, me, remembered });
  $('who').hidden = false;
  $('who-name').textContent = me.open_access ? 'Open access' : me.name;
  clear($('who-scopes')).append(...me.scopes.map((s) => h('span', { class: `scope scope-${s}`, text: s })));
  $('sign-out').hidden = me.open_access;
  $('nav').hidden = false;
  $('nav-chat').hidden = !can('chat');
  $('nav-ops').hidden = !can('admin');
  if (me.open_access) {
    $('banner').hidden = false;
    $('banner-command').textContent = me.create_key_command;
  }
  route();
}

async function signIn(event) {
  event.preventDefault();
  const key = $('signin-key').value.trim();
  signInError('');
  const api = new Api(key);
  try {
    const me = await api.get('/v1/me');
    saveKey(key, $('signin-remember').checked);
    $('signin-key').value = '';
    enter(api, me, $('signin-remember').checked);
  } catch (err) {
    signInError(err.status === 401 ? 'This key was not accepted: check it, or ask your IT administrator for a new one.'
      : `The appliance could not be reached (${err.message}).`);
  }
}

async function boot() {
  $('signin-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', () => signOut());
  $('banner-copy').addEventListener('click', (e) => copyText($('banner-command').textContent, e.target));
  window.addEventListener('hashchange', route);
  const notice = sessionStorage.getItem(NOTICE);
  sessionStorage.removeItem(NOTICE);
  const saved = savedKey();
  const api = new Api(saved ? saved.key : '');
  try {
    enter(api, await api.get('/v1/me'), saved ? saved.remembered : true);
  } catch (err) {
    if (saved && err.status === 401) forgetKey();
    showView('signin');
    signInError(notice || (saved && err.status === 401 ? 'Your saved key is no longer accepted; sign in again.' : ''));
    if (err.status !== 401 && err.status !== undefined) signInError(`The appliance answered ${err.status}: ${err.message}`);
    $('signin-key').focus();
  }
  document.body.dataset.ready = 'true';
}

boot();
