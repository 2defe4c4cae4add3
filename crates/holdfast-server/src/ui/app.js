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
    const rate = j.rate_bytes_per_sec;
    $("rate").textContent = rate ? "(" + bytes(Math.round(rate)) + "/s)" : "";
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

// The plan form: the next five runs of the schedule in its time zone, as the user types.
(function () {
  const schedule = document.getElementById("schedule");
  const timezone = document.getElementById("timezone");
  const list = document.getElementById("next-runs");
  if (!schedule || !timezone || !list) return;
  const error = document.getElementById("cron-error");
  let seq = 0;
  const update = async () => {
    const mine = ++seq;
    const q = new URLSearchParams({ schedule: schedule.value, timezone: timezone.value });
    const r = await fetch("/ui/cron-preview?" + q);
    const body = await r.json();
    if (mine !== seq) return; // a newer keystroke answered first
    list.replaceChildren(...(body.runs || []).map((t) => {
      const li = document.createElement("li");
      li.textContent = t;
      return li;
    }));
    error.textContent = body.error || "";
  };
  schedule.addEventListener("input", update);
  timezone.addEventListener("input", update);
  update();
})();

// A restore that overwrites an existing database asks first.
document.addEventListener("submit", (e) => {
  const force = e.target.querySelector("input[name=force]");
  if (force && force.checked &&
      !window.confirm("Overwrite the existing database with this restore point?")) {
    e.preventDefault();
  }
});
