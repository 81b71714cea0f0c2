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
