// Tally console: keyboard shortcuts, lease countdown and heartbeat, small form helpers.
// Loaded with the page's CSP nonce; no inline handlers anywhere (the policy forbids them).
(function () {
  "use strict";
  var csrf = document.body.getAttribute("data-csrf") || "";
  var overlay = document.getElementById("shortcuts");

  function typing(el) {
    if (!el) return false;
    var tag = el.tagName;
    return tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable ||
      (tag === "INPUT" && !/^(radio|checkbox|button|submit)$/i.test(el.type));
  }
  function toggleHelp(show) {
    if (!overlay) return;
    overlay.hidden = show === undefined ? !overlay.hidden : !show;
  }
  function post(url, extra) {
    var opts = {method: "POST", headers: {"X-CSRF-Token": csrf, "Accept": "application/json"},
                credentials: "same-origin"};
    if (extra) for (var k in extra) opts[k] = extra[k];
    return fetch(url, opts);
  }

  document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
    sel.addEventListener("change", function () { sel.form.submit(); });
  });
  document.querySelectorAll("[data-show-shortcuts]").forEach(function (b) {
    b.addEventListener("click", function () { toggleHelp(true); });
  });
  if (overlay) overlay.addEventListener("click", function (e) { if (e.target === overlay) toggleHelp(false); });

  // Traces table: select rows, count them.
  var all = document.getElementById("select-all");
  var count = document.getElementById("selected-count");
  function recount() {
    if (count) count.textContent = document.querySelectorAll(".row-select:checked").length;
  }
  if (all) all.addEventListener("change", function () {
    document.querySelectorAll(".row-select").forEach(function (c) { c.checked = all.checked; });
    recount();
  });
  document.querySelectorAll(".row-select").forEach(function (c) { c.addEventListener("change", recount); });

  // Score config form: show only the part for the chosen type.
  var dtype = document.getElementById("data-type");
  function showType() {
    document.querySelectorAll(".type-part").forEach(function (fs) {
      fs.hidden = fs.getAttribute("data-for") !== dtype.value;
    });
  }
  if (dtype) { dtype.addEventListener("change", showType); showType(); }

  // ---------------------------------------------------------------- review screen
  var review = document.getElementById("review");
  var form = document.getElementById("score-form");
  var fields = form ? Array.prototype.slice.call(form.querySelectorAll("fieldset.field")) : [];
  var active = 0;
  var leaving = false;

  function setActive(i, moveFocus) {
    if (!fields.length) return;
    active = Math.max(0, Math.min(fields.length - 1, i));
    fields.forEach(function (f, j) { f.classList.toggle("active", j === active); });
    fields[active].scrollIntoView({block: "nearest"});
    // Keys and focus point at the same field: arrows move the focus too, so Tab continues from there.
    if (moveFocus) {
      var f = fields[active];
      var target = f.querySelector("input[type=radio]:checked") || f.querySelector("input[type=radio], input[type=checkbox]");
      if (target) { if (document.activeElement !== target) target.focus({preventScroll: true}); }
      // A number or text field keeps arrows and digits for itself once focused: leave it unfocused.
      else if (document.activeElement && form.contains(document.activeElement)) document.activeElement.blur();
    }
  }
  function choices(f) { return Array.prototype.slice.call(f.querySelectorAll("input[data-key]")); }
  function pick(key) {
    var f = fields[active];
    if (!f) return false;
    var hit = choices(f).filter(function (c) { return c.getAttribute("data-key") === key; })[0];
    if (!hit) return false;
    if (hit.type === "checkbox") { hit.checked = !hit.checked; }
    else { hit.checked = true; if (active < fields.length - 1) setActive(active + 1, true); }
    hit.dispatchEvent(new Event("change", {bubbles: true}));
    return true;
  }
  function step(delta) {
    var f = fields[active];
    if (!f) return;
    var cs = choices(f).filter(function (c) { return c.type === "radio"; });
    if (cs.length) {
      var cur = cs.findIndex(function (c) { return c.checked; });
      var next = cur < 0 ? (delta > 0 ? 0 : cs.length - 1) : Math.max(0, Math.min(cs.length - 1, cur + delta));
      cs[next].checked = true;
      return;
    }
    var num = f.querySelector("input[type=number]");
    if (num) { if (delta > 0) num.stepUp(); else num.stepDown(); }
  }
  function submitForm(f) {
    if (!f) return;
    leaving = true;
    if (f.requestSubmit) f.requestSubmit(); else f.submit();
  }

  if (review && form) {
    setActive(0);
    fields.forEach(function (f, j) {
      f.addEventListener("click", function () { setActive(j); });
      f.addEventListener("focusin", function () { setActive(j); });
    });
    form.addEventListener("submit", function () { leaving = true; });
    document.querySelectorAll(".reason-form").forEach(function (rf) {
      rf.addEventListener("submit", function () { leaving = true; });
    });
  }

  document.addEventListener("keydown", function (e) {
    if (e.defaultPrevented || e.altKey || e.metaKey) return;
    var target = e.target;
    if (e.key === "Escape") {
      if (overlay && !overlay.hidden) { toggleHelp(false); e.preventDefault(); return; }
      if (typing(target)) { target.blur(); e.preventDefault(); }
      return;
    }
    if (typing(target)) {
      if (review && form && e.key === "Enter" && e.ctrlKey && form.contains(target)) {
        e.preventDefault(); submitForm(form);
      }
      return;
    }
    if (e.ctrlKey) return;
    if (e.key === "?") { toggleHelp(); e.preventDefault(); return; }
    if (!review || !form) {
      if (e.key === "g") { window.__tallyG = Date.now(); return; }
      if (window.__tallyG && Date.now() - window.__tallyG < 1500) {
        if (e.key === "q") location.href = "/queues";
        if (e.key === "t") location.href = "/traces";
        window.__tallyG = 0;
      }
      return;
    }
    var k = e.key;
    if (/^[0-9]$/.test(k)) { if (pick(k)) e.preventDefault(); return; }
    switch (k) {
      case "ArrowDown": setActive(active + 1, true); e.preventDefault(); break;
      case "ArrowUp": setActive(active - 1, true); e.preventDefault(); break;
      case "ArrowRight": step(1); e.preventDefault(); break;
      case "ArrowLeft": step(-1); e.preventDefault(); break;
      case "Enter":
        if (target && (target.tagName === "BUTTON" || target.tagName === "A" || target.tagName === "SUMMARY")) return;
        e.preventDefault(); submitForm(form); break;
      case "s": case "S": e.preventDefault(); submitForm(document.getElementById("skip-form")); break;
      case "r": case "R": {
        var sr = document.getElementById("skip-reason"); if (sr) { e.preventDefault(); sr.focus(); }
        break;
      }
      case "f": case "F": {
        var ff = document.getElementById("flag-form");
        if (ff) { e.preventDefault(); var r = ff.querySelector("input[name=reason]"); if (r && !r.value) r.focus(); else submitForm(ff); }
        break;
      }
      case "u": case "U": {
        var uf = document.getElementById("undo-form"); if (uf) { e.preventDefault(); submitForm(uf); }
        break;
      }
      case "c": case "C": {
        var c = document.getElementById("comment"); if (c) { e.preventDefault(); c.focus(); }
        break;
      }
      case "b": case "B": {
        var prev = review.getAttribute("data-previous");
        if (prev) { e.preventDefault(); leaving = true; location.href = prev; }
        break;
      }
    }
  });

  // ---------------------------------------------------------------- lease countdown and heartbeat
  var leaseEl = document.getElementById("lease-left");
  var expiresAttr = review && review.getAttribute("data-lease-expires");
  if (review && leaseEl && expiresAttr) {
    var expires = Date.parse(expiresAttr);
    var hbUrl = review.getAttribute("data-heartbeat");
    var lost = false;
    var tick = function () {
      if (lost) return;
      var left = Math.round((expires - Date.now()) / 1000);
      if (isNaN(left)) { leaseEl.textContent = "held"; return; }
      if (left <= 0) { leaseEl.textContent = "expired: another reviewer may take this item"; leaseEl.parentNode.classList.add("expired"); return; }
      var m = Math.floor(left / 60), s = left % 60;
      leaseEl.textContent = m + ":" + (s < 10 ? "0" : "") + s + " left";
      leaseEl.parentNode.classList.toggle("low", left < 60);
    };
    var beat = function () {
      if (document.hidden || lost) return;
      post(hbUrl).then(function (r) { return r.json().then(function (b) { return [r.ok, b]; }); })
        .then(function (res) {
          if (res[0] && res[1].expires_at) { expires = Date.parse(res[1].expires_at); leaseEl.parentNode.classList.remove("expired"); }
          else { lost = true; leaseEl.textContent = "lost: " + (res[1].error || "lease ended"); leaseEl.parentNode.classList.add("expired"); }
        }).catch(function () {});
      tick();
    };
    tick();
    setInterval(tick, 1000);
    // Renew well before expiry: a third of the remaining time, at most every 60 s, at least every 5 s.
    var period = Math.max(5000, Math.min(60000, (expires - Date.now()) / 3 || 30000));
    setInterval(beat, period);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) beat(); });
  }
  // Tests (and anything else) can wait for this before pressing keys.
  document.documentElement.setAttribute("data-ready", "1");
})();
