(() => {
  const status = document.getElementById("status");
  const form = document.getElementById("reset");
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  // Keep the token in memory only: out of the address bar and the history.
  history.replaceState(null, "", location.pathname);
  if (!token) {
    status.textContent = "This link has no token. Open the link from your email again.";
    return;
  }
  form.hidden = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const password = form.elements.password.value;
    status.textContent = "Saving...";
    try {
      const response = await fetch("/api/v1/auth/password/reset", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token, password }),
      });
      const body = await response.json();
      if (response.ok) {
        form.hidden = true;
        status.textContent = "Your password is changed. Log in with it; every other session was signed out.";
      } else if (response.status === 422) {
        status.textContent = "Choose another password: " + body.detail.map((e) => e.msg).join("; ");
      } else {
        form.hidden = response.status === 400;
        status.textContent = body.detail;
      }
    } catch (error) {
      status.textContent = "Herald could not be reached; try again shortly.";
    }
  });
})();
