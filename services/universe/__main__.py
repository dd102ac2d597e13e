from services.universe.main import create_app
from services.universe.settings import UniverseSettings
from shared.server import run_service

run_service(UniverseSettings, create_app)
