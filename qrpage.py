"""The owner's page (`GET /qr`): the code to scan while a scan is awaited; once paired, how the bot is
doing, refreshing itself: the state, the device, the last save and its size against the budget, the
webhook queue and the last twenty events.

Everything on it is in our own words: no key, no token, no snapshot, no message text, no QR code outside
the scan box, and nothing an upstream service answered (a save error shows its kind and HTTP status; the
details stay in /api/session-status for key holders). Values from outside go through html.escape after
textsafe.printable.
"""

from __future__ import annotations

import html

from qrterminal import qr_svg
from textsafe import printable
from whatsapp import CONNECTED, WAITING_FOR_QR

#: The state as the owner reads it.
STATE_WORDS = {
    "not_started": "not started yet",
    "starting": "starting",
    "restoring": "restoring the saved session",
    "connecting": "connecting to WhatsApp",
    "waiting_for_qr": "waiting for a scan",
    "connected": "connected to WhatsApp",
    "reconnecting": "reconnecting to WhatsApp",
    "logged_out": "logged out: a new scan is needed",
    "temporarily_banned": "temporarily banned by WhatsApp (the session is kept)",
    "client_outdated": "refused by WhatsApp: this client version is too old (upgrade neonize)",
    "stopped": "stopped",
}

STYLE = (
    "*{box-sizing:border-box}body{font-family:system-ui,sans-serif;margin:0;padding:1em;color:#1b1b1b;"
    "background:#f4f5f4}h1{font-size:1.4em;margin:0 0 .6em;text-align:center}"
    "main{max-width:1100px;margin:0 auto}.qr{text-align:center}.qr svg{width:320px;max-width:100%;height:auto;"
    "background:#fff}.scan{text-align:center}"
    ".cards{display:grid;gap:1em;grid-template-columns:1fr}"
    "@media (min-width:800px){.cards{grid-template-columns:minmax(0,1fr) minmax(0,1fr)}}"
    "section{background:#fff;border-radius:8px;padding:1em;box-shadow:0 1px 3px #0002;min-width:0}"
    "h2{font-size:1.05em;margin:0 0 .5em}dl{margin:0;display:grid;grid-template-columns:max-content 1fr;"
    "gap:.35em .8em}dt{color:#555}dd{margin:0;overflow-wrap:anywhere}"
    ".ok{color:#0a7a2f;font-weight:600}.bad{color:#b3261e;font-weight:600}.wait{color:#8a5a00;font-weight:600}"
    "ol{list-style:none;margin:0;padding:0}li{padding:.35em 0;border-top:1px solid #eee;overflow-wrap:anywhere}"
    "li:first-child{border-top:0}time{color:#555;font-size:.85em;display:block}.muted{color:#666}"
    "@media (max-width:520px){dl{grid-template-columns:1fr;gap:0}dt{font-size:.85em;margin-top:.5em}}"
)

# The page fetches itself every 3 s and swaps in what changed (a new QR code, the state, new events): no
# reload, so no flicker while scanning, and the browser's cached login goes with a same-origin GET.
SCRIPT = (
    "<script>setInterval(async()=>{try{const r=await fetch(location.pathname,{cache:'no-store'});"
    "if(!r.ok)return;const next=new DOMParser().parseFromString(await r.text(),'text/html')"
    ".getElementById('status'),now=document.getElementById('status');"
    "if(next&&next.innerHTML!==now.innerHTML)now.innerHTML=next.innerHTML}catch(e){}},3000)</script>"
)


def _text(value) -> str:
    return html.escape(printable(str(value)))


def _when(iso) -> str:
    """`2026-11-25T23:19:04Z` as `2026-11-25 23:19:04 UTC`, escaped."""
    text = str(iso or "?")
    if len(text) == 20 and text[10] == "T" and text.endswith("Z"):
        text = f"{text[:10]} {text[11:19]} UTC"
    return _text(text)


def _bytes(size) -> str:
    if not isinstance(size, (int, float)):
        return "?"
    return f"{size:,} bytes" if size < 10_000 else f"{size / 1024:,.1f} KB"


def _state_class(state: str) -> str:
    if state == CONNECTED:
        return "ok"
    if state in ("logged_out", "temporarily_banned", "client_outdated", "stopped"):
        return "bad"
    return "wait"


def _state_rows(connection) -> list[tuple[str, str]]:
    state = connection.state
    words = STATE_WORDS.get(state, state.replace("_", " "))
    rows = [("State", f"<span class='{_state_class(state)}' id='state'>{_text(words)}</span>")]
    status = connection.status()
    if state == CONNECTED and status.get("connectedSince"):
        rows.append(("Connected since", _when(status["connectedSince"])))
    outage = status.get("unreachable")
    if outage:
        # The cause in our words only; what the library said (`detail`) stays in the keyed status.
        rows.append(("Out of reach", f"<span class='bad'>since {_when(outage.get('since'))}: "
                                     f"{_text(outage.get('cause') or '')}</span>"))
    if status.get("bannedUntil") and state == "temporarily_banned":
        rows.append(("Banned until", _when(status["bannedUntil"])))
    return rows


def _save_rows(session) -> list[tuple[str, str]]:
    """The last save and its size against the budget, from the session's own status."""
    try:
        status = session.status()
    except Exception:
        return [("Saved session", "<span class='bad'>the session store could not be read</span>")]
    store = status.get("store") or {}
    if store.get("kind") == "postgres":
        return [("Saved session", "live in PostgreSQL: every change is stored at once, no size limit")]
    rows = []
    last = status.get("lastSave")
    stored = status.get("storedSnapshot") or {}
    limit = store.get("limit")
    if last and last.get("size") is not None:
        budget = last.get("budget")
        size = _bytes(last["size"]) + (f" of {_bytes(budget)} available" if budget else "")
        rows.append(("Last save", f"{_when(last.get('at'))} ({_text(last.get('reason') or 'save')})"))
        rows.append(("Session size", size + (f" (tier {_text(last['tier'])})" if last.get("tier") else "")))
    elif store.get("has_value"):
        size = stored.get("encodedSize") or store.get("value_size")
        when = store.get("last_saved_at")
        rows.append(("Last save", _when(when) if when else "before this start (restored from it)"))
        room = f" of the {_bytes(limit)} all config vars share" if limit and store.get("kind") == "heroku" else ""
        tier = f" (tier {_text(stored['tier'])})" if stored.get("tier") else ""
        rows.append(("Session size", f"{_bytes(size)}{room}{tier}"))
    else:
        rows.append(("Last save", "not saved yet"))
    error = status.get("lastSaveError")
    if error:
        code = f" (HTTP {error['status']})" if error.get("status") else ""
        rows.append(("Last save failed", f"<span class='bad'>{_text(error.get('at') or '')}: "
                                          f"{_text(error.get('type') or 'error')}{code}</span>"))
    if status.get("saveInProgress"):
        rows.append(("Saving", "<span class='wait'>a save is running</span>"))
    return rows


def _webhook_rows(hub) -> list[tuple[str, str]]:
    queue = hub.status() if hub is not None else None
    if queue is None:
        return [("Webhook", "<span class='muted'>off (set WEBHOOK_URL to receive these events)</span>")]
    where = "in PostgreSQL (kept over restarts)" if queue.get("queue") == "outbox" else "in memory"
    pending = queue.get("pending", 0)
    rows = [("Webhook queue", f"<span id='pending'>{int(pending)}</span> waiting {where}; "
                              f"{int(queue.get('delivered', 0))} delivered since this start")]
    trouble = [f"{int(queue[k])} {k}" for k in ("failed", "dropped") if queue.get(k)]
    if trouble:
        rows.append(("Not delivered", f"<span class='bad'>{', '.join(trouble)}</span>"))
    if pending and queue.get("lastError"):
        rows.append(("Last attempt", f"<span class='wait'>{_text(queue['lastError'])}</span>"))
    return rows


def _events_list(recent: list[dict]) -> str:
    if not recent:
        return "<p class='muted'>Nothing has happened since this start.</p>"
    items = "".join(f"<li><time>{_when(e['at'])}</time>{_text(e['summary'])}</li>" for e in recent)
    return f"<ol id='events'>{items}</ol>"


def _rows(rows: list[tuple[str, str]]) -> str:
    return "".join(f"<dt>{html.escape(name)}</dt><dd>{value}</dd>" for name, value in rows)


def _device_rows(session) -> list[tuple[str, str]]:
    try:
        jid = session.device_jid()
    except Exception:
        jid = None
    return [("Device", _text(jid) if jid else "<span class='muted'>none (not paired)</span>")]


def qr_page(connection, session=None, hub=None) -> str:
    """The HTML for the connection's state: its QR code while a scan is awaited, else the owner's view."""
    state = connection.state
    if state == WAITING_FOR_QR and connection.last_qr:
        body = (
            f"<div class='qr'>{qr_svg(connection.last_qr)}</div>"
            "<p class='scan'>WhatsApp &gt; Settings &gt; Linked devices &gt; Link a device, then scan this code.</p>"
        )
    else:
        headline = ("<p class='ok'>Connected: this bot is paired. Nothing to scan.</p>" if state == CONNECTED
                    else f"<p>No QR code right now ({_text(STATE_WORDS.get(state, state))}). "
                         "This page updates itself.</p>")
        bot_rows = _state_rows(connection) + (_device_rows(session) if session is not None else [])
        save_rows = _save_rows(session) if session is not None else []
        recent = hub.recent() if hasattr(hub, "recent") else []  # a bare queue (tests) keeps no history
        body = (
            f"{headline}<div class='cards'>"
            f"<section><h2>This bot</h2><dl>{_rows(bot_rows + save_rows + _webhook_rows(hub))}</dl></section>"
            f"<section><h2>Last {len(recent)} events, newest first</h2>{_events_list(recent)}</section></div>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'><title>Your WhatsApp bot</title>"
        f"<style>{STYLE}</style></head>"
        f"<body><main><h1>Your WhatsApp bot</h1><div id='status'>{body}</div></main>{SCRIPT}</body></html>"
    )
