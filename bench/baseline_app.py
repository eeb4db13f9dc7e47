"""The smallest WSGI app gunicorn can serve: the baseline the bot's start time and memory are compared to."""


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"ok": true}']
