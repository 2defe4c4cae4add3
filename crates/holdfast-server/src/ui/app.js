"use strict";

// One time format: every <time datetime=...> in the viewer's local time with its zone, to the
// second (the server writes UTC as a fallback).
const localTime = (iso) =>
  new Date(iso).toLocaleString(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
  });
const localTimes = (root) => {
  for (const t of root.querySelectorAll("time[datetime]")) t.textContent = localTime(t.dateTime);
};
localTimes(document);

// Live progress on a job's page: Server-Sent Events from /ui/jobs/ID/events.
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
    // "RFC3339  line": the time in the same local format as everywhere else.
    const cut = e.data.indexOf("  ");
    const at = cut > 0 ? e.data.slice(0, cut) : "";
    const time = document.createElement("time");
    time.dateTime = at;
    time.textContent = at ? localTime(at) : "";
    $("log").append(time, (cut > 0 ? e.data.slice(cut) : e.data) + "\n");
  });
  const steps = document.querySelector("#steps tbody");
  events.addEventListener("job", (e) => {
    const j = JSON.parse(e.data);
    const state = $("state");
    state.textContent = j.state;
    state.className = "badge " + j.state;
    if ($("read")) {
      $("read").textContent = bytes(j.bytes_read);
      $("written").textContent = bytes(j.bytes_written);
      const rate = j.rate_bytes_per_sec;
      $("rate").textContent = rate ? "(" + bytes(Math.round(rate)) + "/s)" : "";
    }
    if (steps && j.steps) {
      steps.replaceChildren(...j.steps.map((s) => {
        const tr = document.createElement("tr");
        const cell = (text) => { const td = document.createElement("td"); td.textContent = text; return td; };
        const badge = document.createElement("span");
        badge.className = "badge " + s.state;
        badge.textContent = s.state;
        const state = document.createElement("td");
        state.append(badge);
        const time = document.createElement("time");
        time.dateTime = s.started_at;
        time.textContent = localTime(s.started_at);
        const started = document.createElement("td");
        started.append(time);
        tr.append(cell(s.attempt), cell(s.step), cell(s.try_no), state, cell(s.agent), started,
                  cell(s.detail || ""));
        return tr;
      }));
    }
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

// A form that destroys something names what is lost and asks first.
document.addEventListener("submit", (e) => {
  const ask = e.target.dataset && e.target.dataset.confirm;
  if (ask && !window.confirm(ask)) {
    e.preventDefault();
  }
});
