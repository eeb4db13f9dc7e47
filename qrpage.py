"""The page an owner opens on Heroku to scan the QR code (`GET /qr`)."""

from __future__ import annotations

import html

from qrterminal import qr_svg
from whatsapp import CONNECTED, WAITING_FOR_QR


def qr_page(connection) -> str:
    """The HTML for the connection's state: its QR code, \"Connected\", or what it is waiting for."""
    state = connection.state
    if state == WAITING_FOR_QR and connection.last_qr:
        body = (
            f"<div class='qr'>{qr_svg(connection.last_qr)}</div>"
            "<p>WhatsApp &gt; Settings &gt; Linked devices &gt; Link a device, then scan this code.</p>"
        )
    elif state == CONNECTED:
        body = "<p>Connected: this bot is paired. Nothing to scan.</p>"
    else:
        body = f"<p>No QR code right now (state: {html.escape(state)}). This page updates itself.</p>"
    # The page fetches itself every 3 s and swaps in what changed (a new QR code, "Connected"): no
    # reload, so no flicker while scanning, and the browser's cached login goes with a same-origin GET.
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'><title>WhatsApp QR</title>"
        "<style>body{font-family:sans-serif;text-align:center;margin:1em}.qr svg{width:320px;max-width:100%;"
        "height:auto;background:#fff}</style></head>"
        f"<body><h1>Link your WhatsApp</h1><main id='status'>{body}</main>"
        "<script>setInterval(async()=>{try{const r=await fetch(location.pathname,{cache:'no-store'});"
        "if(!r.ok)return;const next=new DOMParser().parseFromString(await r.text(),'text/html')"
        ".getElementById('status'),now=document.getElementById('status');"
        "if(next&&next.innerHTML!==now.innerHTML)now.innerHTML=next.innerHTML}catch(e){}},3000)</script>"
        "</body></html>"
    )
