(() => {
  // Opening the link sends nothing: the token is spent only with the new password.
  const main = document.querySelector("main");
  const status = document.getElementById("status");
  const form = document.getElementById("reset");
  const submit = document.getElementById("submit");
  const password = document.getElementById("password");
  const confirmation = document.getElementById("password-confirm");
  const passwordError = document.getElementById("password-error");
  const confirmationError = document.getElementById("password-confirm-error");
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  // Keep the token in memory only: out of the address bar and the history.
  history.replaceState(null, "", location.pathname + location.search);
  // A link opened again in this tab changes only the fragment: start over with its token.
  window.addEventListener("hashchange", () => location.reload());

  const text = (name) => {
    const element = document.querySelector(`[data-text="${name}"]`);
    return element ? element.textContent : "";
  };
  const show = (state, { focus = false, say = state } = {}) => {
    main.dataset.state = state;
    for (const element of document.querySelectorAll("[data-when]")) {
      element.hidden = !element.dataset.when.split(" ").includes(state);
    }
    const message = document.querySelector(`[data-message="${say}"]`);
    status.textContent = message ? message.textContent : "";
    if (focus) status.focus();
  };
  const setError = (input, output, message) => {
    output.textContent = message;
    if (message) {
      input.setAttribute("aria-invalid", "true");
    } else {
      input.removeAttribute("aria-invalid");
    }
  };

  if (!token) {
    show("no-token");
    return;
  }
  show("ready");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setError(password, passwordError, "");
    setError(confirmation, confirmationError, "");
    if (password.value !== confirmation.value) {
      setError(confirmation, confirmationError, text("mismatch"));
      confirmation.focus();
      return;
    }
    submit.disabled = true;
    show("saving");
    let state = "error";
    let shown = "error";
    try {
      const response = await fetch("/api/v1/auth/password/reset", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token, password: password.value }),
      });
      if (response.ok) {
        state = "done";
      } else if (response.status === 400) {
        state = "invalid";
      } else if (response.status === 429) {
        shown = "too-many";
      } else if (response.status === 422) {
        const body = await response.json();
        const problems = Array.isArray(body.detail) ? body.detail : [];
        const messages = problems
          .filter((problem) => Array.isArray(problem.loc) && problem.loc.includes("password"))
          .map((problem) => text(problem.type) || problem.msg);
        // Not the password's fault: the token itself is malformed.
        state = "invalid";
        if (messages.length > 0) {
          submit.disabled = false;
          show("ready");
          setError(password, passwordError, messages.join(" "));
          password.focus();
          return;
        }
      }
    } catch (error) {
      state = "error";
    }
    submit.disabled = false;
    if (state === "done") {
      password.value = "";
      confirmation.value = "";
    }
    show(state, { focus: true, say: state === "error" ? shown : state });
  });
})();
