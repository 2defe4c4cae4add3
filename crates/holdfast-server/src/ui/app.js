// Live progress on a job's page: Server-Sent Events from /ui/jobs/ID/events.
"use strict";
(function () {
  const job = document.getElementById("job");
  if (!job || job.dataset.live !== "true") return;
  const $ = (id) => document.getElementById(id);
  const bytes = (n) =>
    n >= 1e9 ? (n / 1e9).toFixed(2) + " GB" : n >= 1e6 ? (n / 1e6).toFixed(1) + " MB" :
    n >= 1e3 ? (n / 1e3).toFixed(0) + " kB" : n + " B";
  const progress = $("progress");
  progress.removeAttribute("value"); // indeterminate while the dump runs: its size is unknown
  const events = new EventSource(`/ui/jobs/${job.dataset.id}/events?after=${job.dataset.after}`);
  events.addEventListener("log", (e) => {
    $("log").textContent += e.data + "\n";
  });
  events.addEventListener("job", (e) => {
    const j = JSON.parse(e.data);
    const state = $("state");
    state.textContent = j.state;
    state.className = "badge " + j.state;
    $("read").textContent = bytes(j.bytes_read);
    $("written").textContent = bytes(j.bytes_written);
    $("rate").textContent = j.rate ? "(" + bytes(Math.round(j.rate)) + "/s)" : "";
    if (j.state !== "queued" && j.state !== "running") {
      events.close();
      progress.value = 1;
      job.dataset.live = "false";
      if (j.error) {
        const p = document.createElement("p");
        p.className = "error";
        p.id = "error";
        p.setAttribute("role", "alert");
        p.textContent = j.error;
        job.appendChild(p);
      }
      if (j.snapshot_id) {
        const p = document.createElement("p");
        p.innerHTML = "Restore point <code id=snapshot></code>";
        p.querySelector("code").textContent = j.snapshot_id;
        job.appendChild(p);
      }
    }
  });
})();
