// The operations page: its tabs, each panel loaded when shown; the status poller runs only
// while the status tab is on screen.
import { $ } from './dom.js';
import { StatusPanel } from './ops_status.js';
import { KeysPanel } from './ops_keys.js';
import { AuditPanel } from './ops_audit.js';
import { StoragePanel } from './ops_storage.js';
import { GuardsPanel } from './ops_guards.js';

export class OpsView {
  constructor(api, me) {
    this.keys = new KeysPanel(api, me);
    this.panels = {
      status: new StatusPanel(api), keys: this.keys, audit: new AuditPanel(api),
      storage: new StoragePanel(api), guards: new GuardsPanel(api, (p) => this.keys.setPresets(p)),
    };
    this.tab = 'status';
    this.visible = false;
    for (const b of document.querySelectorAll('#ops-tabs button')) {
      b.addEventListener('click', () => this.select(b.dataset.tab));
    }
  }

  select(tab) {
    this.tab = tab;
    for (const b of document.querySelectorAll('#ops-tabs button')) b.classList.toggle('active', b.dataset.tab === tab);
    for (const name of Object.keys(this.panels)) $(`ops-${name}`).hidden = name !== tab;
    this.refresh();
  }

  setVisible(visible) {
    this.visible = visible;
    this.refresh();
  }

  refresh() {
    const status = this.panels.status;
    if (this.visible && this.tab === 'status') status.start();
    else status.stop();
    if (this.visible && this.tab !== 'status') this.panels[this.tab].show();
  }
}
