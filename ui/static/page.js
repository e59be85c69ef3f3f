// What only the browser can do for the page (served from this server: the CSP allows it).
// - the open chat's id in the address bar (?chat=ID), so a reload or a shared link reopens it
// - Esc stops a reply; Enter while a reply is being written says so instead of queueing
// - on a narrow screen the sidebars start closed and close again after a choice; a closed one
//   is out of the Tab order
// - the "‹ 2/3 ›" arrows of answer versions
// - a photo dropped anywhere on the page is attached to the message
// - "Copy conversation" puts the chat's Markdown on the clipboard
(function () {
  "use strict";
  const NARROW = 768;
  const narrow = () => window.innerWidth < NARROW;
  const $ = (selector) => document.querySelector(selector);
  const stopButton = () => $("#input button.stop-button") || $("#input button[aria-label='Stop']");
  const answering = () => { const b = stopButton(); return !!b && b.offsetParent !== null; };

  let shownId = null; // the id last seen: the address changes only when it does (not at load)
  function showChatInAddress() {
    const field = $("#chat-id textarea, #chat-id input");
    if (!field) return;
    const id = field.value.trim();
    if (shownId === null) { shownId = id; if (!id) return; }
    if (id === shownId && id === "") return;
    shownId = id;
    const url = new URL(window.location.href);
    if ((url.searchParams.get("chat") || "") === id) return;
    if (id) url.searchParams.set("chat", id); else url.searchParams.delete("chat");
    window.history.replaceState(null, "", url);
  }

  function notice(text) {
    let box = $("#page-notice");
    if (!box) {
      box = document.createElement("div");
      box.id = "page-notice";
      box.setAttribute("role", "status");
      box.setAttribute("aria-live", "polite");
      document.body.appendChild(box);
    }
    box.textContent = text;
    box.classList.add("shown");
    clearTimeout(box.hideTimer);
    box.hideTimer = setTimeout(() => box.classList.remove("shown"), 3500);
  }

  function closeSidebar(id) {
    const bar = document.getElementById(id);
    if (bar && bar.classList.contains("open")) {
      const toggle = bar.querySelector("button.toggle-button");
      if (toggle) toggle.click();
    }
  }

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && answering()) {
      event.preventDefault();
      stopButton().click();
      notice("Stopped.");
    } else if (event.key === "Enter" && !event.shiftKey && answering() && event.target.closest && event.target.closest("#input")) {
      event.preventDefault();
      event.stopImmediatePropagation();
      notice("A reply is still being written: wait for it, or press Esc to stop it. Your message stays in the box.");
    }
  }, true);

  document.addEventListener("click", (event) => {
    if (!narrow() || !event.target.closest) return;
    if (event.target.closest("#history label, #new-chat")) setTimeout(() => closeSidebar("history-sidebar"), 50);
  }, true);

  // A file dropped anywhere on the page (the chat, the margins) is attached as if dropped on the
  // input box; the box handles its own drops, and other upload fields (Import) keep theirs.
  const ownDrop = (event) => event.target.closest && event.target.closest("#input, #import, input[type=file], [data-testid=file-upload]");
  const hasFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");
  document.addEventListener("dragover", (event) => {
    if (hasFiles(event) && !ownDrop(event)) { event.preventDefault(); event.dataTransfer.dropEffect = "copy"; }
  });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event) || ownDrop(event)) return;
    event.preventDefault();
    const field = $("#input input[type=file]");
    if (!field || !event.dataTransfer.files.length) return;
    const files = new DataTransfer();
    for (const file of event.dataTransfer.files) files.items.add(file);
    field.files = files.files;
    field.dispatchEvent(new Event("change", { bubbles: true }));
  });

  // Gradio names both sidebar arrows "Toggle Sidebar": say which is which. A photo in the chat is
  // a button with no name (its picture has no alt text): say what it is.
  function labelButtons() {
    for (const button of document.querySelectorAll("#chat .image-container button:not([aria-label])")) {
      if (!button.querySelector("img")) continue;
      button.setAttribute("aria-label", "Photo");
      const img = button.querySelector("img");
      if (!img.alt) img.alt = "Photo";
    }
    for (const [id, name] of [["history-sidebar", "Chat history"], ["settings", "Settings"]]) {
      const toggle = document.querySelector(`#${id} button.toggle-button`);
      if (toggle && toggle.getAttribute("aria-label") !== name) {
        toggle.setAttribute("aria-label", name);
        toggle.title = name;
      }
    }
  }

  // A closed sidebar's content is off-screen but still in the Tab order (12 stops through the
  // closed Settings; "New chat" at x = -370 on a phone): inert while closed, and the arrow says
  // whether it is open. Synced on every class change of the sidebar, and once a poll.
  function syncSidebar(side) {
    const content = side.querySelector(":scope > .sidebar-content");
    const toggle = side.querySelector(":scope > button.toggle-button");
    const open = side.classList.contains("open");
    if (content && content.inert === open) content.inert = !open;
    if (toggle && toggle.getAttribute("aria-expanded") !== String(open)) toggle.setAttribute("aria-expanded", String(open));
  }
  const watched = new WeakSet();
  function closedSidebarsInert() {
    for (const side of document.querySelectorAll("#history-sidebar, #settings")) {
      syncSidebar(side);
      if (watched.has(side)) continue;
      watched.add(side);
      new MutationObserver(() => syncSidebar(side)).observe(side, { attributes: true, attributeFilter: ["class"] });
    }
  }

  // The chat list is one Tab stop (each past chat was its own): the open chat, or the first, is
  // reachable by Tab; the arrows move between chats, Enter or Space opens the one focused.
  const chats = () => [...document.querySelectorAll("#history input[type=radio]")];
  function oneTabStopForChats() {
    const all = chats();
    if (!all.length) return;
    const focused = all.indexOf(document.activeElement);
    const current = focused >= 0 ? focused : Math.max(0, all.findIndex((r) => r.checked));
    all.forEach((radio, i) => { const want = i === current ? "0" : "-1"; if (radio.getAttribute("tabindex") !== want) radio.setAttribute("tabindex", want); });
  }
  document.addEventListener("keydown", (event) => {
    const all = chats();
    const at = all.indexOf(document.activeElement);
    if (at < 0) return;
    const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, Home: -at, End: all.length - 1 - at }[event.key];
    if (step !== undefined) {
      event.preventDefault(); // move only: opening every chat passed on the way would be slow
      const next = all[Math.min(all.length - 1, Math.max(0, at + step))];
      next.focus();
      oneTabStopForChats();
    } else if (event.key === "Enter") {
      event.preventDefault();
      all[at].click();
    }
  }, true);

  // Answer versions: "‹ 2/3 ›" under each message that has them (#versions says which, by
  // message index). A message may show as several rows (photos, then text): consecutive rows of
  // one role are one message, since the history alternates.
  function messageGroups() {
    const groups = [];
    let role = null;
    for (const row of document.querySelectorAll("#chat .message-wrap .message-row")) {
      const own = row.classList.contains("user-row") ? "user" : "bot";
      if (own !== role) { groups.push([]); role = own; }
      groups[groups.length - 1].push(row);
    }
    return groups;
  }

  function pickVersion(index, step) {
    const field = $("#version-pick textarea, #version-pick input");
    if (!field || answering()) return;
    field.value = `${index}:${step}:${Date.now()}`;
    field.dispatchEvent(new Event("input", { bubbles: true }));
  }

  function versionNav(index, at, of) {
    const nav = document.createElement("div");
    nav.className = "version-nav";
    nav.dataset.key = `${index}:${at}:${of}`;
    nav.setAttribute("role", "group");
    nav.setAttribute("aria-label", `Version ${at} of ${of}`);
    const arrow = (label, step, disabled) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = step < 0 ? "‹" : "›";
      b.setAttribute("aria-label", label);
      b.title = label;
      b.disabled = disabled;
      b.addEventListener("click", () => pickVersion(index, step));
      return b;
    };
    const count = document.createElement("span");
    count.textContent = `${at}/${of}`;
    nav.append(arrow("Previous version", -1, at <= 1), count, arrow("Next version", 1, at >= of));
    return nav;
  }

  function showVersions() {
    const field = $("#versions textarea, #versions input");
    let wanted = {};
    const groups = messageGroups();
    try {
      const state = JSON.parse((field && field.value) || "{}");
      // Only for the chat it was made for, and not while a reply is being written.
      if (state.count === groups.length && !answering()) wanted = state.at || {};
    } catch (e) { wanted = {}; }
    const keep = new Set();
    for (const [index, [at, of]] of Object.entries(wanted)) {
      const rows = groups[Number(index)];
      if (!rows) continue;
      // Beside the message's own buttons (copy, edit) under its bubble.
      const last = rows[rows.length - 1];
      const after = last.nextElementSibling;
      const buttons = after && after.classList.contains("message-buttons") ? after : null;
      const host = (buttons && buttons.querySelector(".icon-button-wrapper")) || buttons || last;
      const key = `${index}:${at}:${of}`;
      let nav = host.querySelector(":scope > .version-nav");
      if (!nav || nav.dataset.key !== key) {
        if (nav) nav.remove();
        nav = versionNav(Number(index), at, of);
        host.appendChild(nav);
      }
      keep.add(nav);
    }
    for (const nav of document.querySelectorAll("#chat .version-nav")) if (!keep.has(nav)) nav.remove();
  }

  // "Copy conversation": the server puts the chat's Markdown in #copied; it goes to the clipboard.
  let lastCopy = "";
  function copyWhenAsked() {
    const field = $("#copied textarea, #copied input");
    if (!field || !field.value || field.value === lastCopy) return;
    lastCopy = field.value;
    try {
      const { text } = JSON.parse(field.value);
      if (text && navigator.clipboard) navigator.clipboard.writeText(text).catch(() => notice("The browser refused the clipboard: use Export instead."));
    } catch (e) { /* not ours */ }
  }

  let sidebarsChecked = false;
  setInterval(() => {
    showChatInAddress();
    labelButtons();
    closedSidebarsInert();
    oneTabStopForChats();
    showVersions();
    copyWhenAsked();
    if (!sidebarsChecked && $("#history-sidebar")) {
      sidebarsChecked = true;
      if (narrow()) { closeSidebar("history-sidebar"); closeSidebar("settings"); }
    }
  }, 250);
})();
