// What only the browser can do for the page (served from this server: the CSP allows it).
// - the open chat's id in the address bar (?chat=ID), so a reload or a shared link reopens it
// - Esc stops a reply; Enter while a reply is being written says so instead of queueing
// - on a narrow screen the sidebars start closed and close again after a choice
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

  // Gradio names both sidebar arrows "Toggle Sidebar": say which is which.
  function labelButtons() {
    for (const [id, name] of [["history-sidebar", "Chat history"], ["settings", "Settings"]]) {
      const toggle = document.querySelector(`#${id} button.toggle-button`);
      if (toggle && toggle.getAttribute("aria-label") !== name) {
        toggle.setAttribute("aria-label", name);
        toggle.title = name;
      }
    }
  }

  let sidebarsChecked = false;
  setInterval(() => {
    showChatInAddress();
    labelButtons();
    if (!sidebarsChecked && $("#history-sidebar")) {
      sidebarsChecked = true;
      if (narrow()) { closeSidebar("history-sidebar"); closeSidebar("settings"); }
    }
  }, 250);
})();
