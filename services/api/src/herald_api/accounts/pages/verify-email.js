(() => {
  // Opening the link sends nothing: only a press of #confirm spends the token, so a
  // mail scanner that opens links (and runs their scripts) cannot use it up.
  const main = document.querySelector("main");
  const status = document.getElementById("status");
  const button = document.getElementById("confirm");
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  // Keep the token in memory only: out of the address bar and the history.
  history.replaceState(null, "", location.pathname + location.search);
  // A link opened again in this tab changes only the fragment: start over with its token.
  window.addEventListener("hashchange", () => location.reload());

  const show = (state, { focus = false } = {}) => {
    main.dataset.state = state;
    for (const element of document.querySelectorAll("[data-when]")) {
      element.hidden = !element.dataset.when.split(" ").includes(state);
    }
    const message = document.querySelector(`[data-message="${state}"]`);
    status.textContent = message ? message.textContent : "";
    if (focus) status.focus();
  };

  if (!token) {
    show("no-token");
    return;
  }
  show("ready");
  button.addEventListener("click", async () => {
    button.disabled = true;
    show("verifying");
    let state = "error";
    try {
      const response = await fetch("/api/v1/auth/verify", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token }),
      });
      if (response.ok) {
        const body = await response.json();
        state = body.status === "already_verified" ? "already-verified" : "verified";
      } else if (response.status === 400) {
        state = "invalid";
      } else if (response.status === 409) {
        state = "taken";
      }
    } catch (error) {
      state = "error";
    }
    button.disabled = false;
    show(state, { focus: true });
  });
})();
