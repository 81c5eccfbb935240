(async () => {
  const status = document.getElementById("status");
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  // Drop the token from the address bar and the history: it is spent either way.
  history.replaceState(null, "", location.pathname);
  if (!token) {
    status.textContent = "This link has no token. Open the link from your email again.";
    return;
  }
  try {
    const response = await fetch("/api/v1/auth/verify", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
    });
    const body = await response.json();
    status.textContent = response.ok
      ? "Thank you: " + body.email + " is verified. You can log in now."
      : body.detail;
  } catch (error) {
    status.textContent = "Herald could not be reached; try the link again shortly.";
  }
})();
