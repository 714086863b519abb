// The kiosk's screen: follows /events (server-sent events), shows the state and the captions, and sends the
// button and typed text back. Every caption goes into the page as text (textContent), never as markup.
"use strict";

(() => {
  const body = document.body;
  const labels = JSON.parse(body.dataset.labels);
  const textInput = body.dataset.textInput === "true";
  const byId = (id) => document.getElementById(id);
  const label = byId("state-label");
  const detail = byId("state-detail");
  const list = byId("captions");
  const press = byId("press");
  const form = byId("typed");
  const input = byId("typed-text");
  const notice = byId("notice");
  const segments = new Map();
  const MAX_SHOWN = 60;
  const TYPING_VIEWS = new Set(["listening", "thinking", "speaking"]);
  let current = null;
  let noticeTimer = 0;

  function showView(view) {
    current = view;
    body.dataset.view = view.key;
    label.textContent = view.label;
    detail.textContent = view.detail;
    press.dataset.action = view.in_session ? "end" : "start";
    press.textContent = view.in_session ? labels.end : labels.start;
    press.disabled = view.key === "offline" || view.key === "ending";
    const typing = textInput && TYPING_VIEWS.has(view.key);
    if (!typing && form.contains(document.activeElement)) input.blur();
    form.hidden = !typing;
    body.classList.toggle("conversation", view.in_session || segments.size > 0);
  }

  function showCaption(caption) {
    let item = segments.get(caption.segment_id);
    if (!item) {
      item = document.createElement("li");
      item.className = "caption " + (caption.role === "visitor" ? "visitor" : "agent");
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = caption.role === "visitor" ? labels.visitor : labels.agent;
      const text = document.createElement("span");
      text.className = "text";
      item.append(who, text);
      item.dataset.segment = caption.segment_id;
      list.append(item);
      segments.set(caption.segment_id, item);
      while (segments.size > MAX_SHOWN) {
        const [oldest, node] = segments.entries().next().value;
        node.remove();
        segments.delete(oldest);
      }
    }
    item.querySelector(".text").textContent = caption.text;
    item.classList.toggle("interim", !caption.final);
    body.classList.add("conversation");
    list.scrollTop = list.scrollHeight;
  }

  function clearCaptions() {
    segments.clear();
    list.replaceChildren();
    body.classList.toggle("conversation", Boolean(current && current.in_session));
  }

  function tell(message) {
    notice.textContent = message;
    notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { notice.hidden = true; }, 4000);
  }

  function offline() {
    showView({ key: "offline", label: labels.offline, detail: "", session: null, in_session: false });
  }

  function connect() {
    const source = new EventSource("/events");
    source.addEventListener("snapshot", (event) => {
      const snapshot = JSON.parse(event.data);
      clearCaptions();
      showView(snapshot.view);
      snapshot.captions.forEach(showCaption);
    });
    source.addEventListener("view", (event) => showView(JSON.parse(event.data)));
    source.addEventListener("caption", (event) => showCaption(JSON.parse(event.data)));
    source.addEventListener("reset", clearCaptions);
    source.addEventListener("error", () => {
      offline();
      // The browser retries by itself after a dropped stream; after a refused one it gives up, so start over.
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
    });
  }

  async function post(path, payload) {
    try {
      const response = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(payload),
        cache: "no-store",
      });
      const answer = await response.json();
      if (!answer.ok) tell(answer.error);
      return answer.ok;
    } catch (error) {
      tell(labels.offline);
      return false;
    }
  }

  press.addEventListener("click", async () => {
    press.disabled = true; // one tap, one press: a second tap waits for the answer
    await post("/api/press", {});
    if (current) showView(current);
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    if (await post("/api/say", { text })) input.value = "";
  });

  offline();
  connect();
})();
