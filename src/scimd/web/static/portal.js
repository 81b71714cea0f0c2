// Copy buttons: the only script the portal needs; every page works without it.
for (const button of document.querySelectorAll("button.copy")) {
  button.hidden = false;
  button.addEventListener("click", () => {
    const input = document.getElementById(button.dataset.copy);
    input.select();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).catch(() => document.execCommand("copy"));
    } else {
      document.execCommand("copy");
    }
    button.textContent = "Copied";
  });
}

// A form that makes a secret is sent once: a second click would only be refused (the server
// records each form's one-time id). Disabled after the submit event, whose form data is
// already taken then (a submitter disabled before it would drop out of the data).
for (const form of document.querySelectorAll("form")) {
  if (!form.querySelector('input[name="once"]')) continue;
  form.addEventListener("submit", () => {
    setTimeout(() => {
      for (const button of form.querySelectorAll("button")) button.disabled = true;
    });
  });
}
