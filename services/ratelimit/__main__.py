from services.ratelimit.main import create_app, with_fast_path
from services.ratelimit.settings import RatelimitSettings
from shared.server import run_service

run_service(RatelimitSettings, create_app, front=with_fast_path)
