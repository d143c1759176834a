const chat = document.getElementById("chat");
const shown = new Map();

function render(message) {
  // textContent only: what a lead typed is shown, never interpreted.
  let bubble = shown.get(message.id);
  if (!bubble) {
    bubble = document.createElement("div");
    bubble.className = "bubble " + (message.direction === "in" ? "in" : "out");
    bubble.dataset.id = message.id;
    const text = document.createElement("div");
    text.className = "text";
    const meta = document.createElement("div");
    meta.className = "meta";
    bubble.append(text, meta);
    chat.append(bubble);
    shown.set(message.id, bubble);
    document.getElementById("empty")?.remove();
  }
  bubble.querySelector(".text").textContent = message.text;
  bubble.querySelector(".meta").textContent =
    new Date(message.created_at).toLocaleTimeString() + (message.direction === "out" ? " · " + message.status : "");
}

async function refresh() {
  try {
    const response = await fetch("/sandbox/messages", { credentials: "same-origin" });
    if (!response.ok) return;
    const body = await response.json();
    document.getElementById("company").textContent = body.company;
    const atBottom = chat.scrollHeight - chat.scrollTop - chat.clientHeight < 40;
    body.messages.forEach(render);
    if (atBottom) chat.scrollTop = chat.scrollHeight;
  } catch (_) { /* the next poll tries again */ }
}

document.getElementById("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const field = document.getElementById("text");
  const text = field.value;
  if (!text.trim()) return;
  const button = document.getElementById("send");
  button.disabled = true;
  document.getElementById("error").textContent = "";
  try {
    const response = await fetch("/sandbox/messages", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      document.getElementById("error").textContent = body.detail || "Could not send.";
      return;
    }
    field.value = "";
    await refresh();
    chat.scrollTop = chat.scrollHeight;
  } finally {
    button.disabled = false;
    field.focus();
  }
});
document.getElementById("text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    document.getElementById("composer").requestSubmit();
  }
});
refresh();
setInterval(refresh, 1000);
