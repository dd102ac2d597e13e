from services.ratelimit.main import create_app
from services.ratelimit.settings import RatelimitSettings
from shared.server import run_service

run_service(RatelimitSettings, create_app)
