// Usher page helper: resolves locators and reports element states.
// Installed with Page.addScriptToEvaluateOnNewDocument and evaluated once on the current
// document; idempotent (keeps an existing helper of the same version).
(() => {
  const VERSION = 4;
  if (window.__usher && window.__usher.v === VERSION) return;
  const U = { v: VERSION, cur: null, group: [], unloading: false, rows: {} };

  const norm = (s) => String(s == null ? '' : s).replace(/\s+/g, ' ').trim();
  const lc = (s) => s.toLowerCase();
  function textMatch(hay, needle, exact) {
    const h = norm(hay);
    const n = norm(needle);
    if (exact) return h === n;
    return lc(h).includes(lc(n));
  }
  const SKIP = new Set(['script', 'style', 'noscript', 'template', 'head', 'title', 'meta', 'link']);

  function docOrder(arr) {
    return arr.sort((a, b) => (a === b ? 0 : a.compareDocumentPosition(b) & 4 ? -1 : 1));
  }
  function allIn(root) {
    return Array.from(root.querySelectorAll('*'));
  }

  // ---- geometry & state -------------------------------------------------------------
  function frameOffset(el) {
    let x = 0;
    let y = 0;
    let doc = el.ownerDocument;
    while (doc && doc !== document) {
      const fe = doc.defaultView && doc.defaultView.frameElement;
      if (!fe) break;
      const r = fe.getBoundingClientRect();
      x += r.left + fe.clientLeft;
      y += r.top + fe.clientTop;
      doc = fe.ownerDocument;
    }
    return { x, y };
  }
  function box(el) {
    const r = el.getBoundingClientRect();
    const o = frameOffset(el);
    return { x: r.left + o.x, y: r.top + o.y, w: r.width, h: r.height };
  }
  function isVisible(el) {
    if (!el || !el.isConnected) return false;
    const r = el.getBoundingClientRect();
    if (!(r.width > 0 && r.height > 0)) return false;
    const st = el.ownerDocument.defaultView.getComputedStyle(el);
    if (st.visibility !== 'visible') return false;
    if (el.checkVisibility && !el.checkVisibility({ visibilityProperty: true })) return false;
    return true;
  }
  function isEnabled(el) {
    try {
      if (el.matches(':disabled')) return false;
    } catch (e) {
      /* not a form element */
    }
    return !el.closest('[aria-disabled="true"]');
  }
  const TEXT_INPUTS = new Set(['', 'text', 'email', 'password', 'search', 'tel', 'url', 'number',
    'date', 'datetime-local', 'month', 'time', 'week']);
  function isEditable(el) {
    if (!isEnabled(el)) return false;
    const tag = el.localName;
    if (tag === 'input') {
      const t = lc(el.getAttribute('type') || '');
      return TEXT_INPUTS.has(t) && !el.readOnly;
    }
    if (tag === 'textarea') return !el.readOnly;
    return !!el.isContentEditable;
  }
  function checkedState(el) {
    if (el.localName === 'input' && (el.type === 'checkbox' || el.type === 'radio')) return el.checked;
    const a = el.getAttribute('aria-checked') || el.getAttribute('aria-pressed');
    if (a === 'true') return true;
    if (a === 'false' || a === 'mixed') return false;
    return null;
  }
  function describe(el) {
    let s = el.localName;
    if (el.id) s += '#' + el.id;
    const cls = (el.getAttribute('class') || '').trim().split(/\s+/).filter(Boolean).slice(0, 2);
    if (cls.length) s += '.' + cls.join('.');
    return s;
  }
  function elementText(el) {
    if (el.localName === 'input') {
      const t = lc(el.type || '');
      if (t === 'button' || t === 'submit' || t === 'reset') return el.value || '';
      return el.value || '';
    }
    if (el.localName === 'textarea' || el.localName === 'select') return el.value || '';
    return isVisible(el) && typeof el.innerText === 'string' ? el.innerText : el.textContent || '';
  }

  // ---- accessible names & roles ----------------------------------------------------
  function idsText(el, ids) {
    const doc = el.ownerDocument;
    return norm(ids.split(/\s+/).map((id) => {
      const t = doc.getElementById(id);
      return t ? (t.getAttribute('aria-label') || t.textContent || '') : '';
    }).join(' '));
  }
  function labelText(lab) {
    let out = '';
    const walk = (n) => {
      for (const c of n.childNodes) {
        if (c.nodeType === 3) out += c.nodeValue;
        else if (c.nodeType === 1 && !['input', 'select', 'textarea', 'button'].includes(c.localName)
          && !SKIP.has(c.localName)) walk(c);
      }
    };
    walk(lab);
    return norm(out);
  }
  const NAME_FROM_CONTENT = new Set(['button', 'link', 'heading', 'cell', 'gridcell', 'columnheader',
    'rowheader', 'row', 'option', 'tab', 'menuitem', 'menuitemcheckbox', 'menuitemradio',
    'checkbox', 'radio', 'switch', 'treeitem', 'tooltip', 'listitem']);
  function roleOf(el) {
    const r = el.getAttribute('role');
    if (r && r.trim()) return lc(r.trim().split(/\s+/)[0]);
    const tag = el.localName;
    switch (tag) {
      case 'button': return 'button';
      case 'a': case 'area': return el.hasAttribute('href') ? 'link' : null;
      case 'input': {
        const t = lc(el.getAttribute('type') || 'text');
        if (['button', 'submit', 'reset', 'image'].includes(t)) return 'button';
        if (t === 'checkbox') return 'checkbox';
        if (t === 'radio') return 'radio';
        if (t === 'range') return 'slider';
        if (t === 'number') return 'spinbutton';
        if (t === 'search') return el.hasAttribute('list') ? 'combobox' : 'searchbox';
        if (['text', 'email', 'tel', 'url', 'password', ''].includes(t)) {
          return el.hasAttribute('list') ? 'combobox' : 'textbox';
        }
        return null;
      }
      case 'textarea': return 'textbox';
      case 'select': return el.multiple || el.size > 1 ? 'listbox' : 'combobox';
      case 'option': return 'option';
      case 'dialog': return 'dialog';
      case 'h1': case 'h2': case 'h3': case 'h4': case 'h5': case 'h6': return 'heading';
      case 'tr': return 'row';
      case 'td': return 'cell';
      case 'th': return el.getAttribute('scope') === 'row' ? 'rowheader' : 'columnheader';
      case 'table': return 'table';
      case 'thead': case 'tbody': case 'tfoot': return 'rowgroup';
      case 'ul': case 'ol': case 'menu': return 'list';
      case 'li': return 'listitem';
      case 'nav': return 'navigation';
      case 'main': return 'main';
      case 'form': return 'form';
      case 'img': return el.getAttribute('alt') === '' ? 'presentation' : 'img';
      case 'header': return 'banner';
      case 'footer': return 'contentinfo';
      case 'aside': return 'complementary';
      case 'section': return el.hasAttribute('aria-label') || el.hasAttribute('aria-labelledby') ? 'region' : null;
      case 'fieldset': case 'details': return 'group';
      case 'article': return 'article';
      case 'progress': return 'progressbar';
      case 'hr': return 'separator';
      default: return null;
    }
  }
  function roleMatches(actual, wanted) {
    if (actual === wanted) return true;
    return wanted === 'textbox' && actual === 'searchbox';
  }
  function accName(el, role) {
    const lb = el.getAttribute('aria-labelledby');
    if (lb) {
      const t = idsText(el, lb);
      if (t) return t;
    }
    const al = norm(el.getAttribute('aria-label'));
    if (al) return al;
    if (el.labels && el.labels.length) {
      const t = norm(Array.from(el.labels).map(labelText).join(' '));
      if (t) return t;
    }
    const tag = el.localName;
    if (tag === 'input') {
      const t = lc(el.type || '');
      if (t === 'button' || t === 'submit' || t === 'reset') {
        return norm(el.value) || (t === 'submit' ? 'Submit' : t === 'reset' ? 'Reset' : '');
      }
      if (t === 'image') return norm(el.alt);
    }
    if (tag === 'img') return norm(el.alt);
    if (tag === 'fieldset') {
      const lg = el.querySelector('legend');
      if (lg) return norm(lg.textContent);
    }
    if (tag === 'table' && el.caption) return norm(el.caption.textContent);
    if (NAME_FROM_CONTENT.has(role)) {
      const t = norm(el.textContent);
      if (t) return t;
    }
    return norm(el.getAttribute('title') || el.getAttribute('placeholder') || '');
  }

  // ---- engines ---------------------------------------------------------------------
  function preferVisible(els) {
    const vis = els.filter(isVisible);
    return vis.length ? vis : els;
  }
  function engineCss(root, p) {
    let els = Array.from(root.querySelectorAll(p.selector));
    for (const t of p.has_text) els = els.filter((e) => textMatch(e.textContent, t, false));
    if (p.visible) els = els.filter(isVisible);
    return els;
  }
  function engineText(root, p) {
    const cands = allIn(root).filter((e) => !SKIP.has(e.localName) && !e.closest('head')
      && textMatch(e.localName === 'input' ? (['button', 'submit', 'reset'].includes(lc(e.type || '')) ? e.value : '')
        : e.textContent, p.text, p.exact));
    const set = new Set(cands);
    const hasDesc = new Set();
    for (const c of cands) {
      for (let a = c.parentElement; a && a !== root; a = a.parentElement) {
        if (hasDesc.has(a)) break;
        if (set.has(a)) hasDesc.add(a);
      }
    }
    return preferVisible(cands.filter((c) => !hasDesc.has(c)));
  }
  function engineLabel(root, p) {
    const out = new Set();
    for (const lab of root.querySelectorAll('label')) {
      if (lab.control && textMatch(labelText(lab), p.text, p.exact)) out.add(lab.control);
    }
    for (const el of root.querySelectorAll('[aria-label]')) {
      if (textMatch(el.getAttribute('aria-label'), p.text, p.exact)) out.add(el);
    }
    for (const el of root.querySelectorAll('[aria-labelledby]')) {
      if (textMatch(idsText(el, el.getAttribute('aria-labelledby')), p.text, p.exact)) out.add(el);
    }
    return preferVisible(docOrder(Array.from(out)));
  }
  function engineRole(root, p) {
    const out = [];
    for (const el of allIn(root)) {
      const r = roleOf(el);
      if (!r || !roleMatches(r, p.role)) continue;
      if (p.level != null) {
        const lvl = el.getAttribute('aria-level') || (/^h[1-6]$/.test(el.localName) ? el.localName.slice(1) : null);
        if (String(lvl) !== String(p.level)) continue;
      }
      if (p.name != null) {
        const n = accName(el, r);
        if (p.exact ? n !== norm(p.name) : !lc(n).includes(lc(norm(p.name)))) continue;
      }
      out.push(el);
    }
    return preferVisible(out);
  }
  function engineXpath(root, p) {
    const doc = root.ownerDocument || root;
    const res = doc.evaluate(p.expr, root, null, XPathResult.ORDERED_NODE_SNAPSHOT_TYPE, null);
    const out = [];
    for (let i = 0; i < res.snapshotLength; i++) {
      const n = res.snapshotItem(i);
      if (n && n.nodeType === 1) out.push(n);
    }
    return out;
  }
  // The n-th row remembered by a for_each (the same element, whatever the page did to
  // the other rows); on a new document (the helper's memory went with the old one), the
  // n-th match of the rows locator found again.
  function engineRow(p) {
    const arr = U.rows[p.key];
    if (!arr) {
      const again = resolve(p.rows);
      return p.n < again.length ? [again[p.n]] : [];
    }
    const el = arr[p.n];
    return el && el.isConnected ? [el] : [];
  }
  function runPart(root, p) {
    switch (p.kind) {
      case 'row': return engineRow(p);
      case 'currentrow': throw new Error('`row` is the current row of for_each; there is none here');
      case 'css': return engineCss(root, p);
      case 'text': return engineText(root, p);
      case 'label': return engineLabel(root, p);
      case 'role': return engineRole(root, p);
      case 'xpath': return engineXpath(root, p);
      default: throw new Error('unknown locator part ' + p.kind);
    }
  }
  function frameDocs(doc, out) {
    for (const f of doc.querySelectorAll('iframe, frame')) {
      let d = null;
      try { d = f.contentDocument; } catch (e) { d = null; }
      if (d && d.documentElement) {
        out.push(d);
        frameDocs(d, out);
      }
    }
    return out;
  }
  // Resolves a chain; each part runs inside the first match of the previous one.
  function resolve(parts) {
    let els = null;
    for (const p of parts) {
      if (p.kind === 'nth') {
        const arr = els || [];
        const i = p.n < 0 ? arr.length + p.n : p.n;
        els = i >= 0 && i < arr.length ? [arr[i]] : [];
        continue;
      }
      if (els === null) {
        els = runPart(document, p);
        if (!els.length) {
          for (const d of frameDocs(document, [])) {
            els = runPart(d, p);
            if (els.length) break;
          }
        }
      } else {
        els = els.length ? runPart(els[0], p) : [];
      }
    }
    return els || [];
  }

  // Remembers the matches of a locator under `key` (for_each rows); returns their count.
  U.remember = (parts, key) => {
    const els = resolve(parts);
    U.rows[key] = els;
    return els.length;
  };

  const frames2 = () => new Promise((res) => {
    let done = false;
    const fin = () => { if (!done) { done = true; res(); } };
    requestAnimationFrame(() => requestAnimationFrame(fin));
    setTimeout(fin, 120);
  });
  function inViewport(el) {
    const r = el.getBoundingClientRect();
    const w = el.ownerDocument.defaultView;
    return r.top >= 0 && r.left >= 0 && r.bottom <= w.innerHeight && r.right <= w.innerWidth;
  }
  function hitTarget(el) {
    const r = el.getBoundingClientRect();
    const doc = el.ownerDocument;
    const hit = doc.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    if (!hit) return 'outside the viewport';
    if (hit === el || el.contains(hit)) return null;
    if (hit.localName === 'label' && hit.control === el) return null;
    return 'covered by ' + describe(hit);
  }
  function visibleAncestor(el) {
    for (let a = el.parentElement; a; a = a.parentElement) {
      if (isVisible(a)) return a;
    }
    return null;
  }

  // Guards the real mouse click that follows a probe: the page may move or re-render
  // between the probe and the click, and a click that lands on another element (another
  // row's Delete button) must not happen. The first trusted pointer event of the click
  // decides: if it does not target the probed element (or its label), it and the rest of
  // the click are swallowed and the miss is reported, so the caller probes again.
  const GUARDED = ['pointerdown', 'mousedown', 'pointerup', 'mouseup', 'click'];
  U.armClick = () => {
    U.disarmClick();
    const el = U.cur;
    if (!el || !el.isConnected) return false;
    let verdict = null; // null: undecided, 'ok', or a description of what was hit
    const guard = (ev) => {
      if (!ev.isTrusted) return;
      if (verdict === null) {
        const t = ev.target;
        const hit = t === el || (t instanceof Node && el.contains(t)) ||
          (t && t.localName === 'label' && t.control === el);
        verdict = hit ? 'ok' : ('the click would have landed on ' + (t && t.localName ? describe(t) : 'nothing'));
      }
      if (verdict !== 'ok') { ev.preventDefault(); ev.stopImmediatePropagation(); }
    };
    const wins = [window];
    const own = el.ownerDocument.defaultView;
    if (own && own !== window) wins.push(own);
    wins.forEach((w) => GUARDED.forEach((t) => w.addEventListener(t, guard, true)));
    U.clickGuard = () => {
      wins.forEach((w) => GUARDED.forEach((t) => w.removeEventListener(t, guard, true)));
      return verdict === null || verdict === 'ok' ? null : verdict;
    };
    return true;
  };
  // Removes the guard; returns what a missed click would have hit, else null.
  U.disarmClick = () => {
    const g = U.clickGuard;
    U.clickGuard = null;
    return g ? g() : null;
  };

  // opts: {strict, stable, scroll, hit, text, all}
  U.probe = async (parts, opts) => {
    opts = opts || {};
    const out = { count: 0, visibleCount: 0, url: location.href };
    let els;
    try {
      els = resolve(parts);
    } catch (e) {
      out.error = String(e && e.message ? e.message : e);
      return out;
    }
    out.count = els.length;
    out.visibleCount = els.filter(isVisible).length;
    if (opts.all) out.texts = els.map((e) => norm(elementText(e)));
    if (opts.anyText != null) {
      out.anyText = els.some((e) => textMatch(elementText(e), opts.anyText, false));
    }
    if (!els.length) return out;
    let el = els[0];
    if (!opts.strict && out.visibleCount) el = els.find(isVisible);
    U.cur = el;
    out.visible = isVisible(el);
    out.enabled = isEnabled(el);
    out.editable = isEditable(el);
    out.checked = checkedState(el);
    out.tag = el.localName;
    if (opts.text) out.text = norm(elementText(el));
    if (opts.attr != null) out.attr = el.getAttribute(opts.attr);
    if (!out.visible) {
      const a = visibleAncestor(el);
      if (a) out.hoverBox = box(a);
      // a native checkbox/radio hidden behind a visible label
      if (el.labels && el.labels.length) {
        const lab = Array.from(el.labels).find(isVisible);
        if (lab) out.labelBox = box(lab);
      }
      return out;
    }
    if (opts.scroll && !inViewport(el)) {
      el.scrollIntoView({ block: 'center', inline: 'center', behavior: 'instant' });
    }
    if (opts.stable) {
      const b1 = box(el);
      await frames2();
      if (!el.isConnected) { out.count = 0; return out; }
      const b2 = box(el);
      out.stable = b1.x === b2.x && b1.y === b2.y && b1.w === b2.w && b1.h === b2.h;
      out.box = b2;
    } else {
      out.box = box(el);
    }
    if (opts.hit) out.covered = hitTarget(el);
    return out;
  };

  // Actions on the element found by the last probe (U.cur).
  function setNativeValue(el, v) {
    const proto = el.localName === 'textarea' ? HTMLTextAreaElement.prototype : HTMLInputElement.prototype;
    const d = Object.getOwnPropertyDescriptor(proto, 'value');
    if (d && d.set) d.set.call(el, v); else el.value = v;
  }
  const fire = (el, type) => el.dispatchEvent(new Event(type, { bubbles: true }));
  function focusAndClear(el) {
    el.focus();
    if (el.localName === 'input' || el.localName === 'textarea') {
      if (el.value !== '') {
        setNativeValue(el, '');
        fire(el, 'input');
      }
    } else if (el.isContentEditable) {
      const sel = el.ownerDocument.getSelection();
      const range = el.ownerDocument.createRange();
      range.selectNodeContents(el);
      sel.removeAllRanges();
      sel.addRange(range);
    }
    return el.ownerDocument.activeElement === el;
  }
  function findDigitGroup(el, n) {
    if (el.localName !== 'input' || el.maxLength !== 1 || n <= 1) return null;
    let c = el.parentElement;
    for (let depth = 0; c && depth < 4; depth++, c = c.parentElement) {
      const inputs = Array.from(c.querySelectorAll('input')).filter((i) => i.maxLength === 1
        && isVisible(i) && isEnabled(i));
      const idx = inputs.indexOf(el);
      if (idx >= 0 && inputs.length - idx >= n) return inputs.slice(idx, idx + n);
    }
    return null;
  }
  U.act = (op, arg) => {
    const el = U.cur;
    if (!el || !el.isConnected) return { error: 'detached' };
    switch (op) {
      case 'prepareFill': {
        const g = findDigitGroup(el, arg);
        if (g) {
          U.group = g;
          return { split: g.length };
        }
        U.group = [el];
        return { split: 0, focused: focusAndClear(el) };
      }
      case 'focusGroup': {
        const t = U.group[arg];
        if (!t || !t.isConnected) return { error: 'detached' };
        return { focused: focusAndClear(t) };
      }
      case 'finishFill': {
        for (const t of U.group) if (t.isConnected) fire(t, 'change');
        return { ok: true };
      }
      case 'focus': {
        el.focus();
        return { focused: el.ownerDocument.activeElement === el };
      }
      case 'select': {
        if (el.localName !== 'select') return { error: 'not a <select> element' };
        const wanted = arg;
        if (wanted.length > 1 && !el.multiple) return { error: 'several options given for a single <select>' };
        if (wanted.length === 0 && !el.multiple) return { error: 'no option given for a single <select>' };
        const opts = Array.from(el.options);
        const picked = [];
        for (const w of wanted) {
          let o = opts.find((x) => x.value === w) || opts.find((x) => norm(x.label) === norm(w))
            || opts.find((x) => lc(norm(x.label)) === lc(norm(w)));
          if (!o) return { missing: w };
          picked.push(o);
        }
        for (const o of opts) o.selected = picked.includes(o);
        fire(el, 'input');
        fire(el, 'change');
        return { ok: true };
      }
      default:
        return { error: 'unknown action ' + op };
    }
  };

  // Navigation bookkeeping. The mark on the current document (`__usherDocMark`, gone
  // once a new one loads) is set and read by expressions of page.rs of their own, which
  // work before this helper is installed; they reset and read `unloading` and `intent`.
  // A trusted click on a link or a form submission, seen as it happens: a navigation on
  // its way even before `beforeunload` fires (a form submission navigates in a task of
  // its own). Whether it was prevented (an app's router, an AJAX form) is read later, once
  // every handler has run.
  U.intent = null;
  window.addEventListener('click', (ev) => {
    if (!ev.isTrusted || !(ev.target instanceof Element)) return;
    const a = ev.target.closest('a[href], area[href]');
    if (a) U.intent = { ev, a };
  }, false);
  window.addEventListener('submit', (ev) => { U.intent = { ev, form: ev.target }; }, false);
  const sameWindow = (t) => !t || t === '_self' || (window.top === window && (t === '_top' || t === '_parent'));
  U.navIntent = () => {
    const i = U.intent;
    if (!i || i.ev.defaultPrevented) return false;
    if (i.form) {
      const s = i.ev.submitter;
      const method = ((s && s.getAttribute('formmethod')) || i.form.getAttribute('method') || 'get').toLowerCase();
      const target = (s && s.getAttribute('formtarget')) || i.form.getAttribute('target') || '';
      return method !== 'dialog' && sameWindow(target);
    }
    const a = i.a;
    if (typeof a.href !== 'string' || a.hasAttribute('download') || !sameWindow(a.getAttribute('target'))) return false;
    let to;
    try { to = new URL(a.href); } catch (e) { return false; }
    if (to.protocol !== 'http:' && to.protocol !== 'https:') return false;
    const here = new URL(location.href);
    // Only the fragment differs: the same document scrolls or routes, nothing loads.
    return !(to.hash && to.href.split('#')[0] === here.href.split('#')[0]);
  };
  window.addEventListener('beforeunload', () => { U.unloading = true; }, true);
  window.addEventListener('pagehide', () => { U.unloading = true; }, true);

  Object.defineProperty(window, '__usher', { value: U, configurable: true, writable: true, enumerable: false });
})();
