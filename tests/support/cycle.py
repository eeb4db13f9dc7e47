"""The Heroku cycle on real processes: a fake Platform API, a fake dyno manager restarting the app on
every release with an empty disk, and the scripted WhatsApp client inside each real gunicorn worker.
Used by tests/test_cycle.py and bench/bench_cycle.py.
"""

from __future__ import annotations

from tests.support.dyno import DynoManager
from tests.support.fake_heroku import FakeHeroku
from tests.support.scripted_client import Control

TOKEN = "hrku-e2e-token-5f1c9a7be3d24c08"
API_KEY = "e2e-api-key-8c1b7f2e9a"
APP = "bot-e2e"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class Cycle:
    def __init__(self, root, *, overlap=False, extra_env=None):
        self.root = root
        self.control = Control(root / "control")
        self.heroku = FakeHeroku(app_name=APP, token=TOKEN).start()
        # As on Heroku, the bot's own settings are config vars too, and count towards the limit.
        self.heroku.preset({"HEROKU_API_KEY": TOKEN, "HEROKU_APP_NAME": APP, "API_KEY": API_KEY,
                            "SESSION_SAVE_DELAY": "0.3", **(extra_env or {})})
        env = {"WHATSAPP_CLIENT_FACTORY": "tests.support.scripted_client:factory", "SCRIPTED_WA_DIR": str(self.control.dir)}
        self.dynos = DynoManager(self.heroku, root, env, overlap=overlap)

    def preset_session(self, text: str) -> None:
        self.heroku.preset({**self.heroku.vars, "WHATSAPP_SESSION": text})

    def patches(self) -> int:
        return len(self.heroku.requests_with("PATCH"))

    def close(self) -> None:
        self.dynos.stop_all()
        self.heroku.stop()
